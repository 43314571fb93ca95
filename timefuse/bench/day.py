"""``timefuse bench day``: a day's events through the production path, measured per stage.

REST → Kafka → PostgreSQL → dispatch → HTTP, with N ``timefuse api``, ``timefuse ingest`` and
``timefuse dispatch`` processes on one PostgreSQL database and one Kafka topic, concurrent
clients submitting REST batches of events due ``--lead`` seconds later at an even rate, and the
receiver of :mod:`timefuse.bench.day_receiver`. First the knee: steps of rising rate, each
passed when every stage kept up (accepted on time, Kafka lag under a second of load, every event
delivered with p99 lateness under a bound); then ``-n`` events at 80 % of the highest rate
passed (or at ``--rate``). PostgreSQL is the server of ``--database-url`` or a private one;
Kafka the broker of ``--kafka`` / ``KAFKA_BOOTSTRAP_SERVERS`` or one the bench starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from timefuse.bench.day_load import Clients, LagProbe, Phase, Sample, Sampler, Submitted
from timefuse.bench.day_report import (
    DayReport,
    phase_figures,
    process_figures,
    step_record,
)
from timefuse.bench.fleet import Fleet
from timefuse.bench.options import BenchOptions, DayOptions
from timefuse.bench.pgserver import DURABILITY, PrivateServer, Server
from timefuse.bench.processes import BenchError, DayReceiverProcess
from timefuse.bench.progress import Progress
from timefuse.ports.store import StoreError

KNEE_FRACTION = 0.8
# A limiting process below this share of a core was waiting, not computing.
IDLE_BOUND_PERCENT = 70.0
TICK_SECONDS = 1.0
MISSING_LISTED = 20
TOPIC_TIMEOUT_SECONDS = 30.0


@dataclass
class Bench:
    options: BenchOptions
    day: DayOptions
    server: Server
    bootstrap: str
    broker: Any  # LocalKafkaBroker when the bench started it
    fleet: Fleet
    receiver: DayReceiverProcess
    clients: Clients
    sampler: Sampler
    database_url: str
    run_id: str
    phases: int = 0
    notes: list[str] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def pids(self) -> dict[int, str]:
        """Every process to watch, by pid: timefuse's, the receiver, the bench, the broker."""
        found = {pid: role for role, pid in self.fleet.processes()}
        if self.receiver.pid is not None:
            found[self.receiver.pid] = "receiver"
        found[os.getpid()] = "bench"
        if self.broker is not None and self.broker.pid is not None:
            found[self.broker.pid] = "kafka"
        return found

    def next_phase(self, rate: float, events: int) -> Phase:
        self.phases += 1
        d = self.day
        first_due = time.time() + d.lead + 0.5
        return Phase(self.phases, rate, events, first_due, d.lead, d.batch)


def run_day(options: BenchOptions) -> DayReport:
    return asyncio.run(_day(options))


async def _day(o: BenchOptions) -> DayReport:
    assert o.day is not None
    run_id = uuid.uuid4().hex[:8]
    server = await asyncio.to_thread(_server, o)
    broker = None
    try:
        bootstrap = o.kafka
        if not bootstrap:
            broker = await asyncio.to_thread(_start_broker)
            bootstrap = broker.bootstrap_servers
        with tempfile.TemporaryDirectory(prefix="timefuse-bench-day-") as tmp:
            return await _with_services(o, o.day, run_id, server, bootstrap, broker, Path(tmp))
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.close)
        await asyncio.to_thread(server.close)


def _server(o: BenchOptions) -> Server:
    if o.database_url:
        return Server(o.database_url)
    assert o.day is not None
    return PrivateServer.start(DURABILITY[o.day.durability])


def _start_broker() -> Any:
    from timefuse.bench.kafka_broker import (
        THROUGHPUT_JVM_FLAGS,
        KafkaBrokerError,
        LocalKafkaBroker,
    )

    broker = LocalKafkaBroker(jvm_flags=THROUGHPUT_JVM_FLAGS)
    try:
        broker.start()
    except KafkaBrokerError as exc:
        broker.close()
        raise BenchError(f"cannot start a Kafka broker: {exc}") from None
    return broker


async def _with_services(
    o: BenchOptions,
    d: DayOptions,
    run_id: str,
    server: Server,
    bootstrap: str,
    broker: Any,
    workdir: Path,
) -> DayReport:
    database = f"bench_day_{run_id}"
    topic = f"timefuse-day-{run_id}"
    database_url = await asyncio.to_thread(server.create_database, database)
    await asyncio.to_thread(_create_topic, bootstrap, topic, d.partitions)
    fleet = Fleet(database_url, _fleet_env(bootstrap, topic, d), workdir)
    receiver = DayReceiverProcess(o.receiver_host)
    clients: Clients | None = None
    sampler: Sampler | None = None
    try:
        await asyncio.to_thread(fleet.migrate)
        await receiver.start()
        await fleet.start_roles(api=d.api, ingest=d.ingest, dispatch=d.dispatch)
        clients = Clients(fleet.urls("api"), d.clients, o.api_key, run_id)
        lag = LagProbe(bootstrap, topic, topic, d.partitions)
        sampler = Sampler(receiver, clients, fleet.urls("ingest"), lambda: {}, lag)
        bench = Bench(o, d, server, bootstrap, broker, fleet, receiver, clients, sampler,
                      database_url, run_id)  # fmt: skip
        sampler.pids = bench.pids
        return await _measure(bench)
    finally:
        if sampler is not None:
            await sampler.close()
        if clients is not None:
            await clients.close()
        await asyncio.to_thread(fleet.stop)
        await receiver.close()
        await asyncio.to_thread(_delete_topic, bootstrap, topic)
        await asyncio.to_thread(server.drop_database, database)


def _fleet_env(bootstrap: str, topic: str, d: DayOptions) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_PARTITIONS": str(d.partitions),
        "TIMEFUSE_KAFKA_INGEST_TOPIC": topic,
        "TIMEFUSE_KAFKA_CONSUMER_GROUP": topic,
    }


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
        AdminClient,
        NewTopic,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions), NewTopic(f"{topic}.dlq", num_partitions=1)]
    )
    for name, future in futures.items():
        try:
            future.result(TOPIC_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise BenchError(f"cannot create Kafka topic {name!r} on {bootstrap}: {exc}") from None


def _delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    with contextlib.suppress(Exception):
        for future in admin.delete_topics([topic, f"{topic}.dlq"]).values():
            future.result(TOPIC_TIMEOUT_SECONDS)


async def _measure(bench: Bench) -> DayReport:
    o, d = bench.options, bench.day
    report = DayReport(parameters=_parameters(o, d), target=await _target(bench))
    report.store["before"] = await _database_figures(bench.database_url)
    if d.rate is None:
        knee, steps, limit = await _find_knee(bench)
        report.knee = {"rate_per_s": knee, "steps": steps, "limit": limit}
        rate = knee * KNEE_FRACTION
    else:
        rate = d.rate
        report.knee = {"rate_per_s": None, "steps": [], "limit": "not measured: --rate given"}
    report.parameters["rate_per_s"] = rate
    phase = bench.next_phase(rate, o.events)
    result = await _run_phase(bench, phase, "day", stall_seconds=d.stall_seconds)
    report.run = await _run_figures(bench, phase, result)
    report.store["after_run"] = await _database_figures(bench.database_url)
    try:
        report.store["retention"] = await _retention(bench.database_url)
    except StoreError as exc:
        # The run's figures stand without it: an hour of load is not lost to its last step.
        report.store["retention"] = {"error": str(exc)}
        report.notes.append(f"retention after the run failed: {exc}")
    report.store["after_retention"] = await _database_figures(bench.database_url)
    report.store["disk"] = _disk(bench)
    report.target["load_during"] = _load_summary(bench.load)
    report.notes.extend(bench.notes)
    report.errors = int(report.run["missing"]) + int(report.run["duplicates"])
    report.errors += int(report.run["failed_attempts"] or 0)
    return report


def _parameters(o: BenchOptions, d: DayOptions) -> dict[str, Any]:
    return {
        "events": o.events,
        "api_processes": d.api,
        "ingest_processes": d.ingest,
        "dispatch_processes": d.dispatch,
        "clients": d.clients,
        "batch": d.batch,
        "partitions": d.partitions,
        "lead_s": d.lead,
        "durability": None if o.database_url else d.durability,
        "knee_fraction": KNEE_FRACTION if d.rate is None else None,
        "knee_start_per_s": d.knee_start,
        "knee_max_per_s": d.knee_max,
        "knee_step_s": d.step_seconds,
        "knee_factor": d.knee_factor,
        "knee_lateness_p99_s": d.knee_lateness,
    }


async def _target(bench: Bench) -> dict[str, Any]:
    version = await asyncio.to_thread(bench.server.version)
    return {
        "postgresql": f"{version} ({bench.server.kind})",
        "postgresql_settings": await asyncio.to_thread(_server_settings, bench.database_url),
        "kafka": f"{bench.bootstrap} ({'started by the bench' if bench.broker else 'given'})",
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def _server_settings(url: str) -> dict[str, str]:
    names = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_wal_size")
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]


# -- one phase ----------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    submitted: Submitted
    samples: list[Sample]
    summary: dict[str, Any]
    failed_attempts: int | None
    ended: float


async def _run_phase(
    bench: Bench, phase: Phase, label: str, *, stall_seconds: float
) -> PhaseResult:
    """Submit ``phase`` on its schedule and sample every stage until all of it is delivered,
    or nothing more arrived for ``stall_seconds`` after its last due time."""
    failures_before = await _failed_attempts(bench)
    samples = [await bench.sampler.sample(phase.number)]
    submitting = asyncio.create_task(bench.clients.submit(phase, bench.receiver.url()))
    progress = Progress(label, phase.events)
    last_progress = time.time()
    try:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            _check_alive(bench)
            sample = await bench.sampler.sample(phase.number)
            bench.load.append(os.getloadavg()[0])
            if sample.delivered > samples[-1].delivered:
                last_progress = sample.at
            samples.append(sample)
            progress.update(sample.delivered, detail=_progress_detail(samples, bench))
            if not submitting.done():
                continue
            submitted = submitting.result()
            if sample.delivered >= submitted.accepted:
                break
            quiet_since = max(last_progress, phase.last_due)
            if sample.at - quiet_since > stall_seconds:
                break
    finally:
        progress.close()
        if not submitting.done():
            submitting.cancel()
    summary = await bench.receiver.summary(phase.number)
    failures = await _failed_attempts(bench)
    failed = None if failures is None or failures_before is None else failures - failures_before
    return PhaseResult(submitted, samples, summary, failed, time.time())


def _check_alive(bench: Bench) -> None:
    for role, pid in bench.fleet.processes():
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            raise BenchError(f"timefuse {role} (pid {pid}) exited:\n{bench.fleet.log_tails()}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _progress_detail(samples: list[Sample], bench: Bench) -> str:
    last, before = samples[-1], samples[max(0, len(samples) - 6)]
    seconds = max(last.at - before.at, 1e-9)
    rate = (last.delivered - before.delivered) / seconds
    by_role: dict[str, float] = {}
    for pid, role in bench.pids().items():
        used = last.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0)
        by_role[role] = by_role.get(role, 0.0) + used / seconds * 100
    cpu = " ".join(f"{role} {share:.0f}%" for role, share in by_role.items() if role != "bench")
    lag = "?" if last.lag is None else f"{last.lag:,}"
    return f"{rate:,.0f}/s lag {lag} cpu {cpu}"


async def _failed_attempts(bench: Bench) -> int | None:
    """Failed delivery attempts so far, summed over the dispatch processes' /metrics."""
    from timefuse.bench.api import sum_samples

    total = 0.0
    for url in bench.fleet.urls("dispatch"):
        try:
            async with bench.sampler.session.get(url + "/metrics") as response:
                text = await response.text()
        except Exception:
            return None
        total += sum_samples(text).get("timefuse_events_failed_total", 0.0)
    return int(total)


# -- the knee -----------------------------------------------------------------------------------


async def _find_knee(bench: Bench) -> tuple[float, list[dict[str, Any]], str]:
    """Steps of rising rate until one fails; then one step between the last pass and the fail.

    Returns the highest rate passed, every step's record and what limited the first failure.
    """
    d = bench.day
    steps: list[dict[str, Any]] = []
    best: float | None = None
    failed: dict[str, Any] | None = None
    rate = d.knee_start
    while True:
        step = await _knee_step(bench, rate)
        steps.append(step)
        if not step["passed"]:
            failed = step
            break
        best = rate
        if rate >= d.knee_max:
            break
        rate = min(rate * d.knee_factor, d.knee_max)
    if best is not None and failed is not None and failed["offered_per_s"] > best * 1.05:
        middle = (best + failed["offered_per_s"]) / 2
        step = await _knee_step(bench, middle)
        steps.append(step)
        if step["passed"]:
            best = middle
    if best is None:
        # Not even the first step passed: what it delivered is the best estimate there is.
        first = steps[0]
        best = float(first["delivered_rate_per_s"] or d.knee_start / 2)
        bench.notes.append(
            f"no knee step passed, not even {d.knee_start:,.0f}/s: the run uses 80 % of the "
            f"first step's delivered rate ({best:,.0f}/s)"
        )
    limit = (
        _limit(failed)
        if failed is not None
        else f"none found up to {d.knee_max:,.0f}/s (--knee-max)"
    )
    return best, steps, limit


async def _knee_step(bench: Bench, rate: float) -> dict[str, Any]:
    d = bench.day
    events = max(int(rate * d.step_seconds), d.batch)
    phase = bench.next_phase(rate, events)
    result = await _run_phase(bench, phase, f"knee {rate:,.0f}/s", stall_seconds=d.stall_seconds)
    return step_record(phase, result.submitted, result.samples, result.summary, bench.pids(), d)


def _limit(step: dict[str, Any]) -> str:
    stage = {
        "accept": "the API (accepting batches)",
        "ingest": "the ingest consumers (Kafka lag grew)",
        "delivery": "delivery (dispatch, or the store behind it)",
    }[str(step["failed_on"])]
    busiest = ", ".join(
        f"{p['role']} {p['cpu_percent']:.0f}%" for p in step["processes"][:3] if p["cpu_percent"]
    )
    return f"{stage} at {step['offered_per_s']:,.0f}/s; the busiest processes then: {busiest}"


# -- figures ------------------------------------------------------------------------------------


async def _run_figures(bench: Bench, phase: Phase, result: PhaseResult) -> dict[str, Any]:
    figures = phase_figures(phase, result.submitted, result.samples, result.summary)
    figures["failed_attempts"] = result.failed_attempts
    figures["processes"] = process_figures(result.samples, bench.pids(), figures["delivered"])
    pg_cpu = bench.server.cpu_seconds()
    if pg_cpu is not None:
        figures["postgresql_cpu_s_total"] = pg_cpu
    missing = figures["missing"]
    if missing:
        seqs = await bench.receiver.missing(phase.number, phase.events, MISSING_LISTED)
        listed = [s for s in seqs if not result.submitted.unaccepted(s)]
        figures["missing_examples"] = [f"{bench.run_id}-{phase.number}-{s}" for s in listed]
        bench.notes.append(
            f"{missing:,} events were not delivered; their external ids include "
            + ", ".join(figures["missing_examples"][:5])
        )
    return figures


async def _database_figures(url: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_database_size(current_database()),"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,"
                " (SELECT count(*) FROM pg_inherits)"
            ).fetchone()
        assert row is not None
        return {
            "database_mb": row[0] / 2**20,
            "wal_position_mb": row[1] / 2**20,
            "partitions": row[2],
            "at": time.time(),
        }

    return await asyncio.to_thread(read)


async def _retention(url: str) -> dict[str, Any]:
    """Retention as it runs once the run's events are past the retention period: the cutoff is
    the end of the partition that holds now, so the run's partitions go whole, as old days'
    partitions do (deleting row by row is for partitions that still hold live events)."""
    from timefuse.adapters.system.clock import SystemClock
    from timefuse.config import StoreSettings
    from timefuse.entrypoints.bootstrap import build_store
    from timefuse.service.store import Store

    cutoff = await asyncio.to_thread(_end_of_current_partition, url)
    store = Store(build_store(StoreSettings.from_env({"DATABASE_URL": url}), SystemClock()))
    await store.open()
    try:
        started = time.perf_counter()
        deleted = await store.delete_terminal_before(cutoff)
        seconds = time.perf_counter() - started
    finally:
        await store.close()
    return {"deleted": deleted, "seconds": seconds, "cutoff": cutoff.isoformat()}


def _end_of_current_partition(url: str) -> datetime:
    from timefuse.adapters.postgres.partitions import EVENTS, list_partitions

    async def read() -> datetime:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            partitions = await list_partitions(conn, EVENTS)
        now = datetime.now(UTC)
        ends = [p.upper for p in partitions if p.upper is not None and p.upper > now]
        return min(ends) if ends else now + timedelta(seconds=1)

    return asyncio.run(read())


def _disk(bench: Bench) -> dict[str, Any]:
    root = getattr(bench.server, "root", None)
    return {
        "postgresql_data_dir_mb": _du_mb(root) if isinstance(root, Path) else None,
        "kafka_data_dir_mb": _du_mb(bench.broker.data_dir) if bench.broker else None,
    }


def _du_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total / 2**20


def _load_summary(load: list[float]) -> dict[str, float | None]:
    if not load:
        return {"mean": None, "max": None}
    return {"mean": round(sum(load) / len(load), 2), "max": round(max(load), 2)}
