"""What every scenario works with: the options, the API, the receiver, the serve process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from timefuse.bench.api import BATCH_LIMIT, TimefuseApi
from timefuse.bench.options import BenchOptions
from timefuse.bench.processes import ReceiverProcess, ServeProcess
from timefuse.bench.progress import Progress
from timefuse.bench.report import Value

POLL_SECONDS = 0.5


@dataclass
class Context:
    options: BenchOptions
    api: TimefuseApi
    receiver: ReceiverProcess
    serve: ServeProcess | None
    target: dict[str, Value]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    rss_peak_mb: float | None = None

    async def sample_rss(self) -> None:
        """Remember the largest resident set the deployment's /metrics has shown."""
        if self.serve is not None:
            return  # /proc's VmHWM is exact; see peak_rss_mb
        try:
            resident = (await self.api.metrics()).get("process_resident_memory_bytes")
        except Exception:
            return
        if resident is not None:
            mb = resident / 2**20
            self.rss_peak_mb = mb if self.rss_peak_mb is None else max(self.rss_peak_mb, mb)

    def peak_rss_mb(self) -> float | None:
        if self.serve is not None:
            return self.serve.peak_rss_mb()
        return self.rss_peak_mb


async def submit_all(
    ctx: Context,
    events: Sequence[dict[str, Any]],
    concurrency: int,
    label: str,
    *,
    per_request: int = BATCH_LIMIT,
) -> tuple[list[str], list[float]]:
    """Submit ``events`` in requests of ``per_request`` (1: each alone, to
    ``POST /api/v1/events``; else batches), ``concurrency`` requests in flight.

    Returns the ids in order and each request's latency in seconds.
    """
    ids: list[str] = [""] * len(events)
    latencies: list[float] = []
    progress = Progress(label, len(events))
    starts = iter(range(0, len(events), per_request))
    done = 0

    async def client() -> None:
        nonlocal done
        for start in starts:
            chunk = events[start : start + per_request]
            began = time.perf_counter()
            if per_request == 1:
                ids[start] = await ctx.api.submit_one(chunk[0])
            else:
                ids[start : start + len(chunk)] = await ctx.api.submit_batch(chunk)
            latencies.append(time.perf_counter() - began)
            done += len(chunk)
            progress.update(done)

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        progress.close()
    return ids, latencies


@dataclass
class Arrivals:
    first: dict[str, float] = field(default_factory=dict)  # event id -> first arrival
    duplicates: int = 0
    unexpected: int = 0


async def collect(
    expected: dict[str, float],
    take: Callable[[], Awaitable[list[tuple[str, float]]]],
    *,
    label: str,
    not_before: float,
    stall_seconds: float,
    on_tick: Callable[[], Awaitable[None]] | None = None,
) -> Arrivals:
    """Gather arrivals of the ``expected`` ids until all came or none came for a while.

    The stall clock starts no earlier than ``not_before`` (the first due time).
    """
    arrivals = Arrivals()
    progress = Progress(label, len(expected))
    last_news = max(time.time(), not_before)
    try:
        while len(arrivals.first) < len(expected):
            await asyncio.sleep(POLL_SECONDS)
            if on_tick is not None:
                await on_tick()
            records = await take()
            _merge(arrivals, expected, records)
            now = time.time()
            if records:
                last_news = max(now, not_before)
            elif now - max(last_news, not_before) > stall_seconds:
                break
            progress.update(len(arrivals.first))
    finally:
        progress.close()
    return arrivals


def _merge(
    arrivals: Arrivals, expected: dict[str, float], records: list[tuple[str, float]]
) -> None:
    first = arrivals.first
    for event_id, at in records:
        if event_id not in expected:
            arrivals.unexpected += 1
        elif event_id in first:
            arrivals.duplicates += 1
        else:
            first[event_id] = at
