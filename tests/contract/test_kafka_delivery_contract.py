"""The delivery type contract suite, run against the built-in ``kafka`` type on a real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

from tests.integration.kafka.conftest import read_all
from tests.support.kafka_broker import KafkaBroker
from timefuse.config import KafkaSettings
from timefuse.plugins.kafka import KafkaPlugin
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import (
    DeliveryTypeContract,
    ReadBack,
    collect_delivery_types,
)

pytestmark = pytest.mark.kafka


def test_without_a_broker_configured_there_is_no_kafka_type() -> None:
    assert collect_delivery_types(KafkaPlugin(KafkaSettings.from_env({}))) == {}


class TestKafkaType(DeliveryTypeContract):
    @pytest.fixture
    def topic(self, kafka: KafkaBroker) -> str:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        admin.create_topics([NewTopic(name, 1, 1)])[name].result(15)
        return name

    @pytest.fixture
    def env(self, kafka: KafkaBroker) -> dict[str, str]:
        # A short producer timeout so the failure case (an unknown topic) answers quickly.
        return {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TIMEFUSE_KAFKA_DELIVERY_TIMEOUT_SECONDS": "3",
        }

    @pytest.fixture
    def delivery_type(self, env: dict[str, str]) -> DeliveryType:
        plugin = KafkaPlugin(KafkaSettings.from_env(env))
        return collect_delivery_types(plugin, env)["kafka"]

    @pytest.fixture
    def valid_destination(self, topic: str) -> str:
        return topic

    @pytest.fixture
    def invalid_destinations(self) -> list[str]:
        return [
            "",
            ".",
            "..",
            "has space",
            "slash/topic",
            "x" * 250,
            "timefuse.ingest",
            "timefuse.ingest.dlq",
            "timefuse_anything",
            "__consumer_offsets",
        ]

    @pytest.fixture
    def arrange_failure(self) -> str:
        return f"missing-{uuid.uuid4().hex[:10]}"  # auto-creation is off on the test broker

    @pytest.fixture
    def delivered_event_ids(self, kafka: KafkaBroker, topic: str) -> ReadBack:
        async def read() -> list[str]:
            records = read_all(kafka.bootstrap_servers, topic)
            return [
                dict(record.headers() or [])["timefuse-event-id"].decode() for record in records
            ]

        return read
