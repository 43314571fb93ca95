"""A receiver that resets connections and answers 5xx for a long stretch, on real processes:
its breaker and backoff hold it back, and another destination keeps its rate, and no more."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_cluster import Start, insert_due, start_dispatchers, until_heard_of
from tests.support.raw_receiver import Answer, RawReceiver
from tests.support.receiver import Receiver
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RATE, BURST = 20, 5
HEALTHY = 240  # twelve seconds at the rate
HOSTILE = 100
FAILURES, COOLDOWN = 3, 4.0
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Hostile:
    """Resets every other connection and answers the rest 503, until healed."""

    def __init__(self) -> None:
        self.healed = False
        self.failed: list[float] = []  # when each failing request arrived
        self.delivered: set[str] = set()
        self.receiver = RawReceiver(self.answer)

    async def answer(self, answer: Answer) -> None:
        if self.healed:
            self.delivered.add(webhook_id(answer.request))
            await answer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self.failed.append(time.time())
        if len(self.failed) % 2:
            answer.reset()
        else:
            await answer.send(UNAVAILABLE)


def webhook_id(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"webhook-id":
            return value.strip().decode()
    return ""


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    receiver = Hostile()
    await receiver.receiver.start()
    yield receiver
    await receiver.receiver.stop()


async def test_a_resetting_failing_receiver_is_held_back_while_another_keeps_its_rate(
    store: Store, receiver: Receiver, hostile: Hostile, processes: Start, postgres_dsn: str
) -> None:
    limits = {
        f"127.0.0.1:{receiver.port}": {"rate": RATE, "burst": BURST},
        f"127.0.0.1:{hostile.receiver.port}": {"concurrency": 2},
    }
    env = {
        "TIMEFUSE_DESTINATION_LIMITS": json.dumps(limits),
        "TIMEFUSE_BREAKER_FAILURES": str(FAILURES),
        "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN),
        "TIMEFUSE_RETRY_BASE_MS": "500",
        "TIMEFUSE_RETRY_CAP_MS": "3000",
    }
    start_dispatchers(processes, postgres_dsn, 2, env)
    await until_heard_of(store, {"dispatch-0", "dispatch-1"})
    due = datetime.now(UTC) + timedelta(seconds=1)
    failing = await insert_due(store, hostile.receiver.url(), HOSTILE, due, max_retries=20)
    healthy = await insert_due(store, receiver.url("/healthy"), HEALTHY, due)

    # The whole healthy drain runs while the other receiver resets and answers 503.
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/healthy")} >= healthy, timeout=60
    )
    hostile_phase = time.time() - due.timestamp()
    arrivals = sorted(r.at for r in receiver.on("/healthy"))
    took = arrivals[-1] - arrivals[0]
    busiest = max(
        sum(1 for t in arrivals[i:] if t < start + 1.0) for i, start in enumerate(arrivals)
    )
    failed = len(hostile.failed)
    print(
        f"\n{HEALTHY} healthy deliveries in {took:.2f} s ({(HEALTHY - 1) / took:.1f}/s, rate "
        f"{RATE} + burst {BURST}), busiest second {busiest}; the hostile receiver got {failed} "
        f"requests in {hostile_phase:.1f} s"
    )
    # The bucket lets at most RATE * t + BURST claims through in any t seconds, across both
    # processes, so the drain can't be faster than that and no second holds more than
    # RATE + BURST, give or take how much the time from claim to arrival varies (one request
    # per 50 ms of it at this rate: one is allowed). The failing receiver next door does not
    # slow the drain down.
    assert busiest <= RATE + BURST + 1
    assert took >= (HEALTHY - BURST - 1) / RATE
    assert took <= 1.25 * HEALTHY / RATE
    # Breakers and backoff protect the failing receiver: after the first failures, one probe
    # per cool-down for both processes, instead of 100 events retried every few seconds.
    first_wave = 2 * (FAILURES + 2)  # each process may see its own threshold fail
    assert 3 <= failed <= first_wave + hostile_phase / COOLDOWN + 1

    hostile.healed = True
    healed = time.monotonic()
    while not hostile.delivered >= failing:
        assert time.monotonic() - healed < 30, f"{len(failing - hostile.delivered)} not delivered"
        await asyncio.sleep(0.2)
    print(f"healed: its {HOSTILE} events delivered {time.monotonic() - healed:.1f} s later")
    statuses = {(await store.get(event_id)).status for event_id in failing}  # type: ignore[union-attr]
    assert statuses == {EventStatus.COMPLETED}
