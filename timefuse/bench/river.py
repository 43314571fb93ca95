"""``timefuse bench river``: timefuse against River, the Go job queue, on the same machine.

In each run, against one Go webhook receiver and one PostgreSQL server: a raw Go POST loop
(the physical ceiling), raw aiohttp POSTs (one Python process's ceiling), then for each
``--dispatchers`` count D: River v0.51.2 (MaxWorkers = D x the per-dispatcher concurrency,
FetchCooldown 1 ms) draining N jobs available at once, and timefuse (``timefuse api`` + D
``timefuse dispatch``) draining N events submitted through the API and due at one instant.
Every measurement gets a fresh database. The receiver counts distinct webhook ids, so each
row also says whether every delivery arrived exactly once.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from timefuse.bench import baselines
from timefuse.bench.api import BATCH_LIMIT, TimefuseApi, event_fields, iso, sum_samples
from timefuse.bench.fleet import Fleet
from timefuse.bench.gopeers import GoReceiver, Peers, ReceiverStats, build, run_json
from timefuse.bench.options import BenchOptions
from timefuse.bench.pgserver import PrivateServer, Server
from timefuse.bench.processes import BenchError
from timefuse.bench.procfs import cpu_seconds, peak_rss_mb
from timefuse.bench.pyspy import Recorder, cpu_split, find_pyspy
from timefuse.bench.report import Value
from timefuse.bench.river_report import (
    RAW_AIOHTTP,
    RAW_GO,
    RIVER,
    TIMEFUSE,
    TIMEFUSE_SERVE,
    Measurement,
    RiverReport,
)

NO_GO = (
    "the river scenario builds its Go peers (River, the receiver, the raw loop) with the Go "
    "toolchain: install Go 1.26 or later and put `go` on PATH"
)
# The raw loops run at tens of thousands a second: fewer requests would time too short a run.
RAW_REQUESTS_MIN = 20_000
SUBMIT_CONCURRENCY = 4
ASSUMED_INGEST_PER_S = 4000.0
POLL_S = 0.05


@dataclass
class Bench:
    options: BenchOptions
    peers: Peers
    server: Server
    receiver: GoReceiver
    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def stall_s(self) -> float:
        return 10.0 if self.options.short else 30.0

    def database(self, label: str) -> tuple[str, str]:
        name = f"bench_{self.run_id}_{label}"
        return name, self.server.create_database(name)


def usage_problem(options: BenchOptions) -> str | None:
    """What this machine lacks for the scenario as asked, if anything."""
    if shutil.which("go") is None:
        return NO_GO
    if options.py_spy is not None and find_pyspy() is None:
        return "--py-spy needs py-spy on PATH (pip install py-spy)"
    return None


def run_river(options: BenchOptions) -> RiverReport:
    go = shutil.which("go")
    if go is None:
        raise BenchError(NO_GO)
    peers = build(go)
    return asyncio.run(_run(options, peers))


async def _run(options: BenchOptions, peers: Peers) -> RiverReport:
    server = Server(options.database_url) if options.database_url else PrivateServer.start()
    receiver = GoReceiver(peers.path("receiver"), options.receiver_host)
    with tempfile.TemporaryDirectory(prefix="timefuse-bench-") as tmp:
        try:
            await receiver.start()
            bench = Bench(options, peers, server, receiver, Path(tmp))
            measurements = []
            for run in range(1, options.runs + 1):
                measurements += await _one_run(bench, run)
            return RiverReport(
                parameters=_parameters(options),
                target=_target(bench),
                measurements=measurements,
                profiles=bench.profiles,
                notes=bench.notes,
            )
        finally:
            await receiver.close()
            server.close()


def _parameters(o: BenchOptions) -> dict[str, Value]:
    return {
        "events": o.events,
        "runs": o.runs,
        "dispatchers": ",".join(map(str, o.dispatchers)),
        "in_flight_per_dispatcher": o.concurrency,
        "river_fetch_cooldown_ms": 1,
    }


def _target(bench: Bench) -> dict[str, Value]:
    load = os.getloadavg()[0]
    return {
        "postgresql": f"{bench.server.version()} ({bench.server.kind})",
        "go": bench.peers.go_version.removeprefix("go version "),
        "cpus": os.cpu_count(),
        "load_before": round(load, 2),
    }


async def _one_run(bench: Bench, run: int) -> list[Measurement]:
    o = bench.options
    done = [await _raw_go(bench, run), await _raw_aiohttp(bench, run)]
    for dispatchers in o.dispatchers:
        done.append(await _river(bench, run, o.concurrency * dispatchers))
        done.append(await _timefuse(bench, run, dispatchers))
    if o.serve:
        done.append(await _timefuse(bench, run, 1, serve=True))
    return done


def _raw_requests(o: BenchOptions) -> int:
    return o.events if o.short else max(o.events, RAW_REQUESTS_MIN)


async def _raw_go(bench: Bench, run: int) -> Measurement:
    o = bench.options
    requests, warmup = _raw_requests(o), 1000
    await bench.receiver.reset()
    out = await run_json(
        [bench.peers.path("rawpost"), "-url", bench.receiver.url(), "-requests", str(requests),
         "-concurrency", str(o.concurrency), "-warmup", str(warmup)]
    )  # fmt: skip
    seen = await bench.receiver.stats()
    return Measurement(
        system=RAW_GO,
        processes=1,
        in_flight=o.concurrency,
        run=run,
        expected=requests,
        delivered=min(requests, seen.distinct - warmup),
        duplicates=seen.duplicates,
        failed_attempts=int(out["errors"]),
        drain_s=float(out["seconds"]),
        cpu_s=float(out["cpu_s"]),
        peak_rss_mb=float(out["peak_rss_mb"]),
        extra={"connections": seen.connections},
    )


async def _raw_aiohttp(bench: Bench, run: int) -> Measurement:
    o = bench.options
    requests = _raw_requests(o)
    cpu = time.process_time()
    baseline = await baselines.raw_http(bench.receiver.url(), requests, o.concurrency)
    return Measurement(
        system=RAW_AIOHTTP,
        processes=1,
        in_flight=o.concurrency,
        run=run,
        expected=requests,
        delivered=requests - baseline.errors,
        failed_attempts=baseline.errors,
        drain_s=baseline.seconds,
        # The bench's own process; it includes the warm-up's 1,000 requests.
        cpu_s=(time.process_time() - cpu) * requests / (requests + min(requests, 1000)),
    )


async def _river(bench: Bench, run: int, workers: int) -> Measurement:
    o = bench.options
    name, dsn = bench.database(f"river_{run}_{workers}")
    db_cpu: list[float | None] = []

    async def on_line(line: str) -> None:
        if line == "draining":
            db_cpu.append(bench.server.cpu_seconds())

    try:
        await bench.receiver.reset()
        out = await run_json(
            [bench.peers.path("riverbench"), "-database-url", dsn, "-url", bench.receiver.url(),
             "-jobs", str(o.events), "-workers", str(workers), "-run", bench.run_id],
            on_line=on_line,
        )  # fmt: skip
        db_cpu.append(bench.server.cpu_seconds())
        seen = await bench.receiver.stats()
    finally:
        bench.server.drop_database(name)
    started = float(out["started_unix"])
    return Measurement(
        system=RIVER,
        processes=1,
        in_flight=workers,
        run=run,
        expected=o.events,
        delivered=min(o.events, seen.distinct),
        duplicates=seen.duplicates + seen.without_id,
        failed_attempts=int(out["failed_attempts"]),
        drain_s=_drain(seen, started),
        cpu_s=float(out["cpu_s"]),
        db_cpu_s=_difference(db_cpu),
        peak_rss_mb=float(out["peak_rss_mb"]),
        extra={
            "connections": seen.connections,
            "river_version": out["river_version"],
            "completed": out["completed"],
            "all_completed_after_s": float(out["drain_s"]),
            "insert_s": float(out["insert_s"]),
        },
    )


async def _claim_figures(urls: list[str]) -> dict[str, Value]:
    """The delivering processes' claims over the run: how many, their mean size and time."""
    sums: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for url in urls:
            try:
                async with session.get(url + "/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                return {}
            for name, value in sum_samples(text).items():
                sums[name] = sums.get(name, 0.0) + value
    claims = sums.get("timefuse_dispatcher_claim_seconds_count", 0.0)
    if not claims:
        return {}
    return {
        "claims": int(claims),
        "claim_mean_ms": round(1000 * sums["timefuse_dispatcher_claim_seconds_sum"] / claims, 2),
        "claim_mean_events": round(sums.get("timefuse_dispatcher_batch_size_sum", 0.0) / claims, 1),
    }


def _drain(seen: ReceiverStats, started: float) -> float:
    return seen.last_unix - started if seen.last_unix is not None else math.nan


def _difference(samples: list[float | None]) -> float | None:
    if len(samples) != 2 or samples[0] is None or samples[1] is None:
        return None
    return samples[1] - samples[0]


def _fleet_env(o: BenchOptions) -> dict[str, str]:
    if not o.concurrency_given:
        return {}
    # All deliveries go to one receiver: the per-destination cap is the one that binds.
    return {
        "TIMEFUSE_CONCURRENCY": str(o.concurrency),
        "TIMEFUSE_DESTINATION_CONCURRENCY": str(o.concurrency),
    }


async def _timefuse(
    bench: Bench, run: int, dispatchers: int, *, serve: bool = False
) -> Measurement:
    label = f"serve_{run}" if serve else f"timefuse_{run}_{dispatchers}"
    name, dsn = bench.database(label)
    workdir = bench.workdir / label
    workdir.mkdir()
    fleet = Fleet(dsn, _fleet_env(bench.options), workdir)
    try:
        fleet.migrate()
        await fleet.start(dispatchers, serve=serve)
        api = TimefuseApi(fleet.base_url, None)
        try:
            return await _drain_through(bench, fleet, api, run, dispatchers, serve)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{fleet.log_tails()}") from None
        finally:
            await api.close()
    finally:
        fleet.stop()
        bench.server.drop_database(name)


async def _drain_through(
    bench: Bench, fleet: Fleet, api: TimefuseApi, run: int, dispatchers: int, serve: bool
) -> Measurement:
    o = bench.options
    await bench.receiver.reset()
    lead = o.lead if o.lead is not None else 2.0 + o.events / ASSUMED_INGEST_PER_S
    due = time.time() + lead
    ids = await _submit(bench, api, iso(due))
    late = time.time() - due
    if late > -0.2:
        bench.notes.append(
            f"run {run}, {dispatchers} dispatch: submission ended {late:+.1f} s from the due "
            "time, so delivery may have overlapped it; raise --lead"
        )
    pids = fleet.delivering_pids()
    recorders = _recorders(bench, run, pids, "serve" if serve else f"dispatch-{dispatchers}x")
    await asyncio.sleep(max(0.0, due - time.time() - 0.3))
    for recorder in recorders:
        recorder.start()
    await asyncio.sleep(max(0.0, due - time.time() - 0.02))
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    db_before = bench.server.cpu_seconds()
    seen = await _until_delivered(bench, len(ids))
    completed_after = await _until_completed(api, len(ids), due)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    db_cpu = _difference([db_before, bench.server.cpu_seconds()])
    rss = [peak_rss_mb(pid) for pid in pids]
    for recorder in recorders:
        recorder.stop()
    if recorders:
        _add_profile(bench, recorders, seen.distinct, cpu, serve, dispatchers)
    arrived = await bench.receiver.ids()
    expected = set(ids)
    claims = await _claim_figures(fleet.urls("serve" if serve else "dispatch"))
    return Measurement(
        system=TIMEFUSE_SERVE if serve else TIMEFUSE,
        processes=dispatchers,
        in_flight=o.concurrency * dispatchers,
        run=run,
        expected=len(expected),
        delivered=len(expected & arrived),
        duplicates=seen.duplicates + seen.without_id + len(arrived - expected),
        drain_s=_drain(seen, due),
        cpu_s=cpu,
        db_cpu_s=db_cpu,
        peak_rss_mb=sum(r for r in rss if r is not None) if any(rss) else None,
        extra={
            "connections": seen.connections,
            "all_completed_after_s": completed_after,
            "api_cpu_s": sum(cpu_seconds(pid) for pid in fleet.pids("api")),
            "submission_late_s": late,
            **claims,
            "profiled": bool(recorders),
        },
    )


async def _submit(bench: Bench, api: TimefuseApi, due: str) -> list[str]:
    url = bench.receiver.url()
    fields = [event_fields(bench.run_id, i, due, "http", url) for i in range(bench.options.events)]
    ids: list[str] = [""] * len(fields)
    semaphore = asyncio.Semaphore(SUBMIT_CONCURRENCY)

    async def one(start: int) -> None:
        async with semaphore:
            batch = fields[start : start + BATCH_LIMIT]
            ids[start : start + len(batch)] = await api.submit_batch(batch)

    await asyncio.gather(*(one(s) for s in range(0, len(fields), BATCH_LIMIT)))
    return ids


async def _until_delivered(bench: Bench, expected: int) -> ReceiverStats:
    """The receiver's counts once ``expected`` ids arrived, or once arrivals stopped."""
    seen = await bench.receiver.stats()
    last_change, last_requests = time.monotonic(), seen.requests
    while seen.distinct < expected:
        await asyncio.sleep(POLL_S)
        seen = await bench.receiver.stats()
        if seen.requests != last_requests:
            last_change, last_requests = time.monotonic(), seen.requests
        elif time.monotonic() - last_change > bench.stall_s:
            bench.notes.append(f"arrivals stopped at {seen.distinct:,} of {expected:,}")
            break
    return seen


async def _until_completed(api: TimefuseApi, expected: int, due: float) -> float | None:
    """Seconds from the due time until the store counts every event COMPLETED."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if (await api.statistics()).get("COMPLETED", 0) >= expected:
            return time.time() - due
        await asyncio.sleep(POLL_S)
    return None


def _recorders(bench: Bench, run: int, pids: list[int], label: str) -> list[Recorder]:
    o = bench.options
    pyspy = find_pyspy()
    if o.py_spy is None or pyspy is None or run != 1:
        return []
    role = "timefuse serve" if label == "serve" else "timefuse dispatch"
    what = f"{o.events:,} HTTP deliveries due at once, {o.concurrency} in flight"
    return [
        Recorder(pyspy, pid, Path(o.py_spy) / f"{label}-{n}", f"{role} ({n}/{len(pids)}): {what}")
        for n, pid in enumerate(pids, 1)
    ]


def _add_profile(
    bench: Bench, recorders: list[Recorder], delivered: int, cpu: float, serve: bool, d: int
) -> None:
    split = cpu_split(recorders, delivered, cpu)
    if split:
        bench.profiles["timefuse serve" if serve else f"{d} timefuse dispatch"] = split
    note = "run 1's timefuse figures were taken under py-spy (a sampling profiler): slower"
    if note not in bench.notes:
        bench.notes.append(note)
