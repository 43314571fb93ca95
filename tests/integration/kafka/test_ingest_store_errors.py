"""Kafka ingest meets a store that refuses writes for reasons that are not the events' fault.

A primary fenced read-only (as failover tools do to an old primary) must make the consumer
wait and retry, never dead-letter the accepted events or commit past them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from tests.integration.kafka.conftest import Names, eventually, read_topic
from tests.integration.kafka.test_processes import http_event, stored_ids
from tests.support.kafka_broker import KafkaBroker
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def admin(postgres_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


def set_read_only(conn: psycopg.Connection[tuple[object, ...]], read_only: bool) -> None:
    """Fence the database read-only (or lift the fence) for every session from now on, and
    end the sessions timefuse holds, so its pool reconnects into the new state."""
    name = conn.info.dbname
    value = "on" if read_only else "off"
    conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}')
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


async def test_a_read_only_primary_dead_letters_nothing_and_loses_nothing(
    processes: Callable[..., TimefuseProcess],
    kafka_env: dict[str, str],
    kafka: KafkaBroker,
    names: Names,
    receiver: Receiver,
    admin: psycopg.Connection[tuple[object, ...]],
) -> None:
    tf = processes(kafka_env)
    events = [http_event(receiver, "fenced", n) for n in range(8)]
    set_read_only(admin, True)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text  # Kafka took them: accepted
    ids = {str(item["id"]) for item in response.json()["data"]["ids"]}
    await asyncio.sleep(6.0)  # several consumer retries against the read-only store
    assert stored_ids(kafka_env["DATABASE_URL"]) == []
    assert read_topic(kafka.bootstrap_servers, names.dead_letters, 1, timeout=2.0) == []

    set_read_only(admin, False)
    await eventually(lambda: set(stored_ids(kafka_env["DATABASE_URL"])) == ids, 30)
    assert read_topic(kafka.bootstrap_servers, names.dead_letters, 1, timeout=2.0) == []
    assert "dead-lettered" not in tf.log()
