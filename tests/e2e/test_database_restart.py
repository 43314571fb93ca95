"""PostgreSQL restarts under a running timefuse: it reconnects by itself and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.support.postgres_server import PostgresServer
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def event(receiver: Receiver, n: int, due: datetime) -> dict[str, object]:
    return {
        "external_job_id": f"restart-{n}",
        "source": "restart",
        "scheduled_at": due.isoformat(),
        "delivery_type": "http",
        "destination": receiver.url("/hook"),
        "payload": {"n": n},
    }


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_restart_loses_nothing_and_needs_no_restart_of_timefuse(
    mode: str,
    postgres: PostgresServer,
    postgres_dsn: str,
    receiver: Receiver,
    processes: Callable[..., TimefuseProcess],
) -> None:
    if not postgres.restartable:
        pytest.fail("the test PostgreSQL server must be one the tests can restart")
    # The test server runs without synchronous commit for speed; an immediate shutdown may then
    # lose commits it acknowledged. This database asks for the durability production has.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(name))
        )
    tf = processes({"DATABASE_URL": postgres_dsn})
    start = datetime.now(UTC)
    async with httpx.AsyncClient(timeout=15) as client:
        events = [event(receiver, n, start + timedelta(seconds=2 + n / 5)) for n in range(40)]
        response = await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})
        assert response.status_code == 202, response.text
        ids = {item["id"] for item in response.json()["data"]["ids"]}

        postgres.stop(mode)
        try:
            ready = await client.get(f"{tf.base_url}/health/ready")
            assert ready.status_code == 503
            assert "store" in ready.text
            refused = await client.post(
                f"{tf.base_url}/api/v1/events", json=event(receiver, 99, start + timedelta(1))
            )
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            await asyncio.sleep(3.0)
        finally:
            postgres.start()

        async def ready_again() -> bool:
            return (await client.get(f"{tf.base_url}/health/ready")).status_code == 200

        for _ in range(100):
            if await ready_again():
                break
            await asyncio.sleep(0.2)
        assert await ready_again()
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/hook")} >= ids, timeout=60
    ), f"{len(ids - {r.event_id for r in receiver.on('/hook')})} events never arrived"
