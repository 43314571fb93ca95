"""Tenants sharing receivers, against a real ``timefuse serve``: one tenant's failures don't hold
another's deliveries, many receivers don't grow the dispatcher, and /metrics names receivers
only to keys that may see them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver, always
from timefuse.entrypoints.auth import hash_key

Start = Callable[..., TimefuseProcess]
EVENTS = "/api/v1/events"
SUBMITTER = "tfk_e2e_submitter"
SCRAPER = "tfk_e2e_scraper"


def event(source: str, destination: str, n: int, **extra: object) -> dict[str, Any]:
    return {
        "external_job_id": f"{source}-{n}",
        "source": source,
        "scheduled_at": datetime.now(UTC).isoformat(),
        "delivery_type": "http",
        "destination": destination,
        "payload": {"n": n},
        **extra,
    }


async def submit(
    client: httpx.AsyncClient, tf: TimefuseProcess, events: list[dict[str, Any]], key: str = ""
) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    for start in range(0, len(events), 1000):
        response = await client.post(
            f"{tf.base_url}{EVENTS}/batch",
            json={"events": events[start : start + 1000]},
            headers=headers,
        )
        assert response.status_code == 202, response.text


async def until(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_failing_tenant_does_not_hold_another_tenants_deliveries_to_the_same_host(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/broken"] = always(503)
    tf = timefuse({"TIMEFUSE_BREAKER_FAILURES": "3", "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "60"})
    failing = [event("noisy", receiver.url("/broken"), n, max_retries=10) for n in range(10)]
    await submit(client, tf, failing)

    async def noisy_held() -> dict[str, Any] | None:
        answer = await client.get(f"{tf.base_url}{EVENTS}/admin/destinations")
        rows = [row for row in answer.json()["data"] if row["held_sources"] == ["noisy"]]
        return rows[0] if rows else None

    held = await until(noisy_held, timeout=20)
    assert held is not None, tf.log()
    assert held["breaker_for_all"] is False
    attempts_while_held = receiver.count("/broken")
    started = time.monotonic()
    await submit(client, tf, [event("quiet", receiver.url("/ok"), n) for n in range(5)])

    assert await receiver.wait_for(lambda: receiver.count("/ok") >= 5, timeout=15), tf.log()
    print(f"\nthe other tenant's 5 deliveries took {time.monotonic() - started:.2f} s")
    # The failing tenant stays held for its cool-down: no more attempts from it meanwhile.
    assert receiver.count("/broken") == attempts_while_held


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(
        f'[[keys]]\nname = "submitter"\nsha256 = "{hash_key(SUBMITTER)}"\n'
        'sources = ["e2e"]\nroles = ["submit", "read"]\n\n'
        f'[[keys]]\nname = "scraper"\nsha256 = "{hash_key(SCRAPER)}"\n'
        'sources = ["e2e"]\nroles = ["metrics"]\n'
    )
    return path


@pytest.fixture
async def slow() -> AsyncIterator[Receiver]:
    # Long enough to scrape while the delivery is in flight; short enough not to hold teardown.
    server = Receiver(delay_seconds={"/slow": 5.0})
    await server.start()
    yield server
    await server.stop()


async def test_metrics_name_no_receiver_without_a_metrics_key_when_keys_are_configured(
    timefuse: Start, slow: Receiver, client: httpx.AsyncClient, keys: Path
) -> None:
    tf = timefuse({"TIMEFUSE_API_KEYS_FILE": str(keys)})
    await submit(client, tf, [event("e2e", slow.url("/slow"), 0)], key=SUBMITTER)

    async def in_flight() -> bool:
        return slow.concurrent >= 1

    assert await until(in_flight, timeout=15), tf.log()
    receiver = f'destination="127.0.0.1:{slow.port}"'
    url = f"{tf.base_url}/metrics"

    anonymous = await client.get(url)
    submitter = await client.get(url, headers={"authorization": f"Bearer {SUBMITTER}"})
    scraper = await client.get(url, headers={"authorization": f"Bearer {SCRAPER}"})

    assert (anonymous.status_code, submitter.status_code) == (401, 403)
    assert str(slow.port) not in anonymous.text + submitter.text
    assert scraper.status_code == 200
    assert f"timefuse_destination_in_flight{{{receiver}}} 1.0" in scraper.text


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


RECEIVERS = 100_000


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_hundred_thousand_receivers_leave_memory_and_metrics_bounded(
    timefuse: Start, client: httpx.AsyncClient, postgres_dsn: str
) -> None:
    # On PostgreSQL: the process then holds no store pages (SQLite's page cache would grow
    # with the file up to its 64 MB whatever the receivers), so what grows is per receiver.
    tf = timefuse(
        {
            "DATABASE_URL": postgres_dsn,
            "TIMEFUSE_DESTINATION_IDLE_MAX": "100",
            "TIMEFUSE_HTTP_TIMEOUT_SECONDS": "2",
        }
    )
    # Each receiver its own loopback address with nothing listening: refused at once.
    hosts = [f"127.{n // 62_500 + 1}.{n // 250 % 250}.{n % 250 + 2}" for n in range(RECEIVERS)]
    assert len(set(hosts)) == RECEIVERS
    assert tf.proc is not None
    before = peak_rss_mb(tf.proc.pid)
    for start in range(0, RECEIVERS, 1000):  # each batch due as it is sent
        batch = [
            event("sprayer", f"http://{hosts[n]}:9/x", n, max_retries=0)
            for n in range(start, start + 1000)
        ]
        await submit(client, tf, batch)

    async def all_attempted() -> bool:
        stats = (await client.get(f"{tf.base_url}{EVENTS}/statistics")).json()["data"]
        return bool(stats["PENDING"] == 0 and stats["PROCESSING"] == 0)

    assert await until(all_attempted, timeout=400), tf.log()
    stats = (await client.get(f"{tf.base_url}{EVENTS}/statistics")).json()["data"]
    assert stats["DEAD_LETTER"] == RECEIVERS  # each refused once, none lost
    metrics = (await client.get(f"{tf.base_url}/metrics")).text
    tracked = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("timefuse_destinations_tracked ")
    )
    peak = peak_rss_mb(tf.proc.pid)
    print(
        f"\n{RECEIVERS:,} receivers: {tracked:.0f} remembered, /metrics {len(metrics):,} bytes,"
        f" peak RSS {before:.0f} MB before, {peak:.0f} MB after"
    )
    assert tracked <= 100
    assert "timefuse_destination_in_flight{" not in metrics  # nothing in flight, nothing held
    # Bounded: a series per receiver would be megabytes (40,008 series were 2.77 MB), and
    # state kept per receiver (a connection pool each, say) hundreds of megabytes.
    assert len(metrics) < 100_000
    assert peak < before + 60
