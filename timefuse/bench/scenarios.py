"""The HTTP scenarios: ingest, deliver-http, herd and steady."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from timefuse.bench import baselines
from timefuse.bench.api import BATCH_LIMIT, event_fields, iso, metric_delta
from timefuse.bench.context import Arrivals, Context, collect, submit_all
from timefuse.bench.processes import BenchError
from timefuse.bench.report import Report
from timefuse.bench.stats import lateness_summary, percentile, rate

FAILED = ("timefuse_events_failed_total",)
BASELINE_MAX_REQUESTS = 20_000
# Events submitted while the clock runs toward their due time, at this assumed ingest rate.
ASSUMED_INGEST_PER_S = 4000.0
INGEST_DUE_AHEAD_S = 30 * 86400.0
SUBMIT_CONCURRENCY = 4


def _report(ctx: Context, **parameters: Any) -> Report:
    return Report(ctx.options.scenario, dict(ctx.target), parameters)


async def ingest(ctx: Context) -> Report:
    o = ctx.options
    batch = 1 if o.single else BATCH_LIMIT
    report = _report(ctx, events=o.events, concurrency=o.concurrency, batch=batch)
    report.baseline = await baselines.raw_insert(_baseline_store_url(ctx), o.events)
    before = (await ctx.api.statistics()).get("TOTAL", 0)
    due = iso(time.time() + INGEST_DUE_AHEAD_S)
    fields = [event_fields(ctx.run_id, i, due, "http", ctx.receiver.url()) for i in range(o.events)]
    started = time.perf_counter()
    _, latencies = await submit_all(ctx, fields, o.concurrency, "submitting", per_request=batch)
    accepted = time.perf_counter() - started
    # Inline ingest answers 202 only once the events are in the store; through Kafka they are
    # persisted when the statistics count them.
    inline = ctx.target.get("ingest") == "inline"
    persisted = accepted if inline else await _until_counted(ctx, before + o.events, started)
    latencies.sort()
    report.rate_key = "persist_rate_per_s"
    report.results = {
        "accept_rate_per_s": rate(o.events, accepted),
        "persist_rate_per_s": rate(o.events, persisted),
        "time_to_accept_s": accepted,
        "time_to_persist_s": persisted,
        "batch_latency_p50_s": percentile(latencies, 50),
        "batch_latency_p99_s": percentile(latencies, 99),
    }
    return report


def _baseline_store_url(ctx: Context) -> str | None:
    """The configured database when the bench hosts timefuse on it; else a temporary file."""
    if ctx.serve is None:
        return None
    url = ctx.serve.env.get("DATABASE_URL", "")
    return None if url.startswith("sqlite:") else url or None


async def _until_counted(ctx: Context, total: int, started: float, timeout: float = 300) -> float:
    """Seconds from ``started`` until the statistics count ``total`` events."""
    deadline = time.monotonic() + timeout
    while (await ctx.api.statistics()).get("TOTAL", 0) < total:
        if time.monotonic() > deadline:
            raise BenchError(f"the events were not all persisted within {timeout:g} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def at_once(ctx: Context) -> Report:
    """deliver-http and herd: N events due at one instant, just after they are all submitted."""
    o = ctx.options
    report = _report(ctx, events=o.events, concurrency=o.concurrency)
    report.baseline = await baselines.raw_http(
        ctx.receiver.url(), min(o.events, BASELINE_MAX_REQUESTS), o.concurrency
    )
    await ctx.receiver.take()  # drop the baseline's records
    before = await ctx.api.metrics()
    lead = o.lead if o.lead is not None else 2.0 + o.events / ASSUMED_INGEST_PER_S
    due = time.time() + lead
    fields = [
        event_fields(ctx.run_id, i, iso(due), "http", ctx.receiver.url()) for i in range(o.events)
    ]
    ids, _ = await submit_all(ctx, fields, SUBMIT_CONCURRENCY, "submitting")
    if time.time() > due:
        report.notes.append(
            f"submission ended {time.time() - due:.1f} s after the due time: delivery overlapped "
            "it; raise --lead"
        )
    expected = dict.fromkeys(ids, due)
    arrivals = await collect_from(ctx, expected, due)
    after = await ctx.api.metrics()
    delivery_results(ctx, report, expected, arrivals, metric_delta(before, after, FAILED))
    report.results.update(dispatcher_figures(before, after, len(expected)))
    await explain_missing(ctx, report)
    return report


async def explain_missing(ctx: Context, report: Report) -> None:
    """Where undelivered events are, by status, so a stuck run says what it is stuck on."""
    if report.results.get("missing"):
        counts = await ctx.api.statistics()
        statuses = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "TOTAL")
        report.notes.append(f"the deployment's events by status: {statuses}")


def dispatcher_figures(
    before: dict[str, float], after: dict[str, float], events: int
) -> dict[str, Any]:
    """Claims made, their mean size and duration, and the CPU timefuse spent, all from the
    deployment's own /metrics."""
    claims = metric_delta(before, after, ("timefuse_dispatcher_batch_size_count",))
    claimed = metric_delta(before, after, ("timefuse_dispatcher_batch_size_sum",))
    seconds = _delta(before, after, "timefuse_dispatcher_claim_seconds_sum")
    cpu = _delta(before, after, "process_cpu_seconds_total")
    return {
        "timefuse_cpu_s": cpu,
        "timefuse_cpu_per_event_s": cpu / events if events else None,
        "claims": claims,
        "mean_claim_batch": claimed / claims if claims else None,
        "mean_claim_time_s": seconds / claims if claims else None,
        "claiming_total_s": seconds,
        # Claimed events the destination gate handed back for later, and expired leases
        # taken back: both send an event round the claim loop again.
        "deferred": metric_delta(before, after, ("timefuse_events_throttled_total",)),
        "leases_recovered": metric_delta(before, after, ("timefuse_leases_recovered_total",)),
    }


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def collect_from(
    ctx: Context,
    expected: dict[str, float],
    not_before: float,
    take: Callable[[], Awaitable[list[tuple[str, float]]]] | None = None,
) -> Arrivals:
    """Arrivals at the receiver (or from ``take``), sampling the deployment's memory."""
    stall = 10.0 if ctx.options.short else 30.0
    return await collect(
        expected,
        take or ctx.receiver.take,
        label="delivered",
        not_before=not_before,
        stall_seconds=stall,
        on_tick=ctx.sample_rss,
    )


def delivery_results(
    ctx: Context, report: Report, expected: dict[str, float], arrivals: Arrivals, failed: int
) -> None:
    delivered = len(arrivals.first)
    missing = len(expected) - delivered
    times = sorted(arrivals.first.values())
    first_due = min(expected.values(), default=0.0)
    late = [at - expected[event_id] for event_id, at in arrivals.first.items()]
    results: dict[str, Any] = {
        "delivered": delivered,
        "missing": missing,
        "duplicates": arrivals.duplicates,
    }
    if times:
        results["rate_after_first_arrival_per_s"] = rate(delivered, times[-1] - times[0])
        results["drain_time_s"] = times[-1] - first_due
        results["drain_rate_per_s"] = rate(delivered, times[-1] - first_due)
        results["first_arrival_after_due_s"] = times[0] - first_due
    results.update(lateness_summary(late))
    results["failed_attempts"] = failed
    results["peak_rss_mb"] = ctx.peak_rss_mb()
    report.results = results
    report.errors = failed + missing
    report.rate_key = "drain_rate_per_s"
    if missing:
        report.notes.append(f"{missing} events were not delivered before the bench gave up")


async def steady(ctx: Context) -> Report:
    o = ctx.options
    report = _report(
        ctx, rate=o.rate, duration=o.duration, events=o.events, concurrency=o.concurrency
    )
    baseline_requests = min(o.events, BASELINE_MAX_REQUESTS)
    report.baseline = await baselines.raw_http(ctx.receiver.url(), baseline_requests, o.concurrency)
    await ctx.receiver.take()
    before = await ctx.api.metrics()
    lead = o.lead if o.lead is not None else 2.0
    expected, late_submissions = await _submit_steadily(ctx, lead)
    arrivals = await collect_from(ctx, expected, max(expected.values(), default=time.time()))
    after = await ctx.api.metrics()
    delivery_results(ctx, report, expected, arrivals, metric_delta(before, after, FAILED))
    report.results.update(dispatcher_figures(before, after, len(expected)))
    await explain_missing(ctx, report)
    report.results["offered_per_s"] = o.rate
    report.results["submitted_after_due"] = late_submissions
    if late_submissions:
        report.notes.append(
            f"{late_submissions} events were accepted after their due time (ingest could not "
            "keep up): their lateness includes submission"
        )
    return report


async def _submit_steadily(ctx: Context, lead: float) -> tuple[dict[str, float], int]:
    """Every tick, submit the events due in one tick's slot ``lead`` seconds ahead."""
    o = ctx.options
    tick = 0.1
    expected: dict[str, float] = {}
    late = 0
    start = time.time()
    tasks: list[asyncio.Task[None]] = []

    async def submit(fields: list[dict[str, Any]], due: list[float]) -> None:
        nonlocal late
        ids = await ctx.api.submit_batch(fields)
        now = time.time()
        late += sum(1 for d in due if d < now)
        expected.update(zip(ids, due, strict=True))

    for n in range(int(o.duration / tick)):
        slot = start + lead + n * tick
        count = int(o.rate * (n + 1) * tick) - int(o.rate * n * tick)
        due = [slot + tick * k / max(count, 1) for k in range(count)]
        fields = [
            event_fields(ctx.run_id, int(o.rate * n * tick) + k, iso(d), "http", ctx.receiver.url())
            for k, d in enumerate(due)
        ]
        if fields:
            tasks.append(asyncio.create_task(submit(fields, due)))
        await asyncio.sleep(max(0.0, start + (n + 1) * tick - time.time()))
    await asyncio.gather(*tasks)
    return expected, late
