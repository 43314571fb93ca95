"""The Kafka pieces that need no broker: the envelope, topic rules, error classes, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError

from timefuse.adapters.kafka import buffer as kafka_buffer
from timefuse.adapters.kafka.envelope import EnvelopeError, decode_event, encode_event
from timefuse.adapters.memory import MemoryStore
from timefuse.config import ConfigError, KafkaSettings, Settings
from timefuse.domain.outcome import OutcomeKind
from timefuse.entrypoints.bootstrap import build_buffer
from timefuse.plugins.kafka import (
    KafkaDeliverySettings,
    TopicRules,
    classify,
    cluster_clients,
    delivery_producer_config,
)
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.testing.factories import make_event


def test_an_event_survives_the_envelope_with_its_payload_bytes_untouched() -> None:
    payload = '{ "b" : [1, 2.50, "é"],\n "a": null }'.encode()
    event = make_event(
        payload=payload,
        scheduled_at=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        max_retries=7,
        delivery_window_seconds=30.0,
        retry_backoff_seconds=2.5,
        extra={"trace": "abc"},
    )
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.payload == payload


def test_the_envelope_carries_its_version_and_embeds_the_payload_raw() -> None:
    value = encode_event(make_event(payload=b'{"x":1}'))
    assert value.startswith(b'{"v":1,')
    assert b'"payload":{"x":1}' in value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\xff\xfe", "malformed"),
        (b'{"v": 2, "id": "x"}', "$.v"),
        (b'{"v": 1, "id": "x"}', "missing required field"),
        (b"[1, 2]", "Expected `object`"),
    ],
)
def test_what_is_not_an_envelope_is_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason.replace("$", r"\$")):
        decode_event(value)


def test_an_envelope_with_a_naive_time_is_refused() -> None:
    value = encode_event(make_event()).replace(b'Z","delivery_type"', b'","delivery_type"')
    with pytest.raises(EnvelopeError):
        decode_event(value)


def rules(**env: str) -> TopicRules:
    return TopicRules.of(KafkaSettings.from_env(env), KafkaDeliverySettings.from_env(env))


@pytest.mark.parametrize(
    "topic",
    ["orders", "orders.v1", "Orders_2024-01", "a", "x" * 249, "timefusex.y", "my.timefuse."],
)
def test_ordinary_topics_are_valid_destinations(topic: str) -> None:
    assert rules().validate(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "",
        ".",
        "..",
        "x" * 250,
        "with space",
        "slash/y",
        "ünicode",
        "colon:y",
        "timefuse.ingest",
        "timefuse.anything",
        "timefuse_ingest",
        "__consumer_offsets",
    ],
)
def test_bad_and_reserved_topics_are_refused_with_a_reason(topic: str) -> None:
    reason = rules().validate(topic)
    assert reason


def test_renamed_ingest_topics_are_reserved_too() -> None:
    renamed = rules(TIMEFUSE_KAFKA_INGEST_TOPIC="ingest")
    assert renamed.validate("ingest")
    assert renamed.validate("ingest.dlq")


def test_an_allow_list_limits_destinations_to_its_topics() -> None:
    allowed = rules(TIMEFUSE_KAFKA_ALLOWED_TOPICS="orders, billing")
    assert allowed.validate("orders") is None
    assert "TIMEFUSE_KAFKA_ALLOWED_TOPICS" in (allowed.validate("audit") or "")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, OutcomeKind.PERMANENT),
        (KafkaError.MSG_SIZE_TOO_LARGE, OutcomeKind.PERMANENT),
        (KafkaError.TOPIC_EXCEPTION, OutcomeKind.PERMANENT),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, OutcomeKind.RETRIABLE),
        (KafkaError._UNKNOWN_TOPIC, OutcomeKind.RETRIABLE),
        (KafkaError._MSG_TIMED_OUT, OutcomeKind.RETRIABLE),
        (KafkaError.LEADER_NOT_AVAILABLE, OutcomeKind.RETRIABLE),
        (KafkaError.NOT_ENOUGH_REPLICAS, OutcomeKind.RETRIABLE),
        (KafkaError._QUEUE_FULL, OutcomeKind.RETRIABLE),
        (KafkaError._TRANSPORT, OutcomeKind.RETRIABLE),
    ],
)
def test_kafka_errors_are_classified(code: int, kind: OutcomeKind) -> None:
    outcome = classify(KafkaError(code), "orders")
    assert outcome.kind is kind
    assert KafkaError(code).name() in (outcome.error or "")


def test_an_unknown_topic_failure_names_the_topic() -> None:
    outcome = classify(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "orders")
    assert "'orders' does not exist" in (outcome.error or "")


def test_producer_defaults_are_durable_and_overridable() -> None:
    cluster = KafkaSettings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "TIMEFUSE_KAFKA_CLIENT_CONFIG": '{"security.protocol": "SSL"}',
            "TIMEFUSE_KAFKA_PRODUCER_CONFIG": '{"linger.ms": 2}',
        }
    )
    clients = cluster_clients(cluster)
    config = clients.producer_config()
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["compression.type"] == "lz4"
    assert config["batch.size"] == 32768
    assert config["linger.ms"] == 2
    assert config["security.protocol"] == "SSL"
    consumer = clients.consumer_config("g")
    assert consumer["enable.auto.commit"] is False
    assert consumer["group.id"] == "g"


def test_the_delivery_producer_is_the_adapters_durable_one_with_its_own_timeout() -> None:
    cluster = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    delivery = KafkaDeliverySettings.from_env({"TIMEFUSE_KAFKA_DELIVERY_TIMEOUT_SECONDS": "7"})
    config = delivery_producer_config(cluster, delivery)
    assert config["bootstrap.servers"] == "k:9092"
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["message.timeout.ms"] == 7000
    overridden = KafkaSettings.from_env({"TIMEFUSE_KAFKA_PRODUCER_CONFIG": '{"linger.ms": 0}'})
    assert delivery_producer_config(overridden, delivery)["linger.ms"] == 0


@pytest.mark.parametrize(("seconds", "expected_ms"), [("7.5", 7500), ("30", 30000), ("0.2", 1000)])
def test_the_ingest_producer_gives_up_on_a_record_when_its_submission_does(
    monkeypatch: pytest.MonkeyPatch, seconds: str, expected_ms: int
) -> None:
    # A record still unacknowledged when its submission was answered 503 must fail, never be
    # written later: librdkafka's message.timeout.ms follows the submit timeout (at least the
    # one second librdkafka needs to try at all).
    configs: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, config: dict[str, Any], name: str) -> None:
            configs.append(config)

    monkeypatch.setattr(kafka_buffer, "AsyncProducer", Recording)
    settings = KafkaSettings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS": seconds}
    )
    build_buffer(settings, Store(MemoryStore()), Metrics())
    (config,) = configs
    assert config["message.timeout.ms"] == expected_ms
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["bootstrap.servers"] == "k:9092"


@pytest.mark.parametrize("text", ["[1]", "{", '{"a": {"b": 1}}', '{"a": null}'])
def test_kafka_client_config_must_be_a_flat_json_object(text: str) -> None:
    with pytest.raises(ConfigError, match="TIMEFUSE_KAFKA_PRODUCER_CONFIG"):
        Settings.from_env({"TIMEFUSE_KAFKA_PRODUCER_CONFIG": text})
