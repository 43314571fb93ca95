"""The ingest records the Kafka consumer refused, through the admin API and the console.

The reader here is a stand-in holding records as the dead letter topic would; the Kafka
adapter that reads the real topic is tested against a broker in tests/integration/kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, running_api
from timefuse.config import ApiSettings
from timefuse.entrypoints.api.app import create_app
from timefuse.ports.ingest import StreamUnavailable

REFUSED = f"{EVENTS}/admin/ingest/dead-letters"


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes
    value_bytes: int
    error: str | None
    origin: str | None


@dataclass
class Topic:
    """Records newest first, as a reader returns them; ``down`` makes every read fail."""

    records: list[Record] = field(default_factory=list)
    down: bool = False
    asked: list[int] = field(default_factory=list)
    topic: str = "timefuse.ingest.dlq"

    async def newest(self, limit: int) -> list[Record]:
        self.asked.append(limit)
        if self.down:
            raise StreamUnavailable("Kafka: _TRANSPORT: all brokers down")
        return self.records[:limit]


RECORDS = [
    Record(1, 7, datetime(2030, 5, 1, 12, 0, 3, tzinfo=UTC), b"shop", b"\xffnot an envelope",
           16, "not a timefuse event envelope", "timefuse.ingest/1/40"),
    Record(0, 2, datetime(2030, 5, 1, 12, 0, 1, tzinfo=UTC), None, b'{"id": "x"' + b" " * 10,
           9000, "external_job_id: is required", "timefuse.ingest/0/12"),
]  # fmt: skip


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as api:
        yield api


async def client_with(harness: Harness, topic: Topic | None) -> httpx.AsyncClient:
    app = create_app(
        service=harness.service,
        metrics=harness.metrics,
        settings=ApiSettings(),
        keys=None,
        admin=harness.tf.admin,
        refused=topic,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://timefuse")


async def test_the_refused_records_come_newest_first_with_their_reasons(harness: Harness) -> None:
    topic = Topic(RECORDS)
    async with await client_with(harness, topic) as client:
        response = await client.get(REFUSED, params={"limit": "5"})

    assert response.status_code == 200, response.text
    assert_envelope(response.json(), success=True)
    assert response.json()["data"] == [
        {
            "partition": 1,
            "offset": 7,
            "timestamp": "2030-05-01T12:00:03Z",
            "key": "shop",
            "error": "not a timefuse event envelope",
            "origin": "timefuse.ingest/1/40",
            "value": "\ufffdnot an envelope",
            "value_bytes": 16,
            "value_truncated": False,
        },
        {
            "partition": 0,
            "offset": 2,
            "timestamp": "2030-05-01T12:00:01Z",
            "key": None,
            "error": "external_job_id: is required",
            "origin": "timefuse.ingest/0/12",
            "value": '{"id": "x"' + " " * 10,
            "value_bytes": 9000,
            "value_truncated": True,
        },
    ]
    assert topic.asked == [5]


async def test_the_default_and_the_bounds_of_limit(harness: Harness) -> None:
    topic = Topic(RECORDS)
    async with await client_with(harness, topic) as client:
        assert (await client.get(REFUSED)).status_code == 200
        for bad in ("0", "501", "ten", "-1"):
            response = await client.get(REFUSED, params={"limit": bad})
            assert response.status_code == 400, bad
            assert response.json()["errors"][0]["field"] == "limit"

    assert topic.asked == [50]


async def test_without_kafka_there_is_no_such_topic(harness: Harness) -> None:
    async with await client_with(harness, None) as client:
        response = await client.get(REFUSED)

    assert response.status_code == 404
    assert response.json()["error_code"] == "NO_KAFKA_INGEST"
    assert "KAFKA_BOOTSTRAP_SERVERS" in response.json()["message"]


async def test_kafka_down_is_a_503(harness: Harness) -> None:
    async with await client_with(harness, Topic(RECORDS, down=True)) as client:
        api = await client.get(REFUSED)
        page = await client.get("/ui/dead-letters/refused")

    assert api.status_code == 503
    assert "all brokers down" in api.json()["message"]
    assert page.status_code == 503
    assert "Kafka did not answer" in page.text


async def test_the_console_page_shows_what_the_api_answers(harness: Harness) -> None:
    topic = Topic(RECORDS)
    async with await client_with(harness, topic) as client:
        page = await client.get("/ui/dead-letters/refused", params={"limit": "25"})
        listing = await client.get("/ui/dead-letters")
        without = await client_with(harness, None)
        async with without:
            absent = await without.get("/ui/dead-letters/refused")
            plain = await without.get("/ui/dead-letters")

    assert page.status_code == 200
    cards = page.text.split('<ol class="refused">')[1].split("</ol>")[0].split("<li")[1:]
    assert ["not a timefuse event envelope" in cards[0], "external_job_id" in cards[1]] == [
        True,
        True,
    ]
    assert "timefuse.ingest.dlq/1/7" in cards[0]
    assert "the first 4 KiB shown" in cards[1]
    assert topic.asked == [25]
    assert "/dead-letters/refused" in listing.text  # linked from the dead letters
    assert "no Kafka ingest topic" in absent.text
    assert "/dead-letters/refused" not in plain.text
