"""``timefuse bench chaos``: random faults during a steady load, and what each one cost.

A campaign runs timefuse as a cluster on PostgreSQL (a private cluster started from the
machine's binaries, or ``--database-url``): ``timefuse api`` and ``--dispatchers`` ``timefuse
dispatch`` processes, and two receivers that hold every request ``--receiver-delay`` seconds:
``capped`` (a per-destination concurrency cap of ``--cap``) and ``limited`` (a rate of
``--dest-rate`` per second). A client offers ``--rate`` events a second over REST, each due
``--lead`` seconds after it is sent, half to each receiver.

After a fault-free warm-up window, each of ``--faults`` windows of ``--interval`` seconds gets
one fault at a random moment, the kinds taken in a shuffled rotation:

- ``kill-api``: SIGKILL of the API, started again after up to 2 s;
- ``kill-dispatch``: SIGKILL of one dispatcher, started again (same worker id) after 1 to 8 s,
  so sometimes the others find it dead first and sometimes its successor takes its claims back;
- ``restart-db-fast`` / ``restart-db-immediate``: PostgreSQL stopped (``pg_ctl stop -m``) and
  started again 2 to 5 s later (private cluster only; the database runs with
  ``synchronous_commit = on``, as a production one does);
- with ``--kafka`` (a local broker from Maven Central's jars, and ``--ingest`` ``timefuse
  ingest`` consumers): ``kill-ingest`` (SIGKILL of a consumer, started again after 1 to 5 s) and
  ``stop-broker`` (the broker stopped for 5 to 30 s, then started again).

Then the load stops and the bench waits (up to ``--drain`` s) for every acknowledged event. Per
window it prints what was offered and acknowledged (202), delivered, missing, delivered more
than once, the lateness of first arrivals (arrival - scheduled time), the most requests each
receiver held at once, and the most the limited one received in any second. The exit status is
1 when an acknowledged event is missing.

    timefuse bench chaos [--faults 20] [--interval 15] [--dispatchers 3] [--rate 200] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg
from psycopg import sql

from timefuse.bench.api import BATCH_PATH, iso
from timefuse.bench.fleet import fleet_env
from timefuse.bench.kafka_broker import KafkaBrokerError, LocalKafkaBroker
from timefuse.bench.options import positive_float, positive_int
from timefuse.bench.pgserver import PrivateServer, Server
from timefuse.bench.processes import BenchError, ReceiverProcess, free_port
from timefuse.bench.stats import percentile

READY_SECONDS = 60.0
TICKS_PER_SECOND = 10
IN_FLIGHT_REQUESTS = 64
SOURCE = "timefuse-chaos"
PROCESS_KINDS = ("kill-api", "kill-dispatch")
DATABASE_KINDS = ("restart-db-fast", "restart-db-immediate")
KAFKA_KINDS = ("kill-ingest", "stop-broker")
ALL_KINDS = PROCESS_KINDS + DATABASE_KINDS + KAFKA_KINDS

_encoder = msgspec.json.Encoder()


# -- the processes --------------------------------------------------------------------------


class Member:
    """One timefuse process of the cluster, which the campaign kills and starts again."""

    def __init__(self, role: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.role = role
        self._args = list(args)
        self._env = env
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def spawn(self) -> None:
        self._log_offset = self._log.stat().st_size if self._log.exists() else 0
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "timefuse", self.role, *self._args],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def until_started(self) -> None:
        """This incarnation has logged that it started."""
        deadline = time.monotonic() + READY_SECONDS
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise BenchError(f"timefuse {self.role} exited ({code}):\n{self.tail()}")
            with self._log.open("rb") as log:
                log.seek(self._log_offset)
                if b'"started"' in log.read():
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"timefuse {self.role} did not start:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


# -- the load --------------------------------------------------------------------------------


@dataclass
class Sent:
    window: int
    due: float


class Load:
    """Offers ``rate`` events a second in ten batches a second, each batch its own request, so
    a slow or refused answer does not slow the offer. Only a 202 makes an event acknowledged."""

    def __init__(self, base_url: str, destinations: Sequence[str], rate: int, lead: float) -> None:
        self.base_url = base_url
        self.destinations = list(destinations)
        self.rate = rate
        self.lead = lead
        self.window = 0
        self.acknowledged: dict[str, Sent] = {}
        self.offered: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        # Why requests were refused, the first few words of each kind of answer, with counts.
        self.reasons: Counter[str] = Counter()
        self._seq = 0
        self._run_id = uuid.uuid4().hex[:8]
        self._requests: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=IN_FLIGHT_REQUESTS)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            tick = 1.0 / TICKS_PER_SECOND
            per_tick = self.rate / TICKS_PER_SECOND
            owed = 0.0
            next_tick = time.monotonic()
            while not stop.is_set():
                owed += per_tick
                count, owed = int(owed), owed - int(owed)
                if count:
                    self._offer(session, count)
                next_tick += tick
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_tick - time.monotonic()))
            await asyncio.gather(*self._requests, return_exceptions=True)

    def _offer(self, session: aiohttp.ClientSession, count: int) -> None:
        window = self.window
        self.offered[window] += count
        if len(self._requests) >= IN_FLIGHT_REQUESTS:
            self.refused[window] += count  # the API is not keeping up: shed by the client
            return
        due = time.time() + self.lead
        events = []
        for _ in range(count):
            self._seq += 1
            events.append({
                "external_job_id": f"{self._run_id}-{self._seq}",
                "source": SOURCE,
                "scheduled_at": iso(due),
                "delivery_type": "http",
                "destination": self.destinations[self._seq % len(self.destinations)],
                "payload": {"seq": self._seq},
                "max_retries": 10,
            })  # fmt: skip
        task = asyncio.create_task(self._post(session, window, due, events))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _post(
        self, session: aiohttp.ClientSession, window: int, due: float, events: list[Any]
    ) -> None:
        try:
            body = _encoder.encode({"events": events})
            async with session.post(self.base_url + BATCH_PATH, data=body) as response:
                text = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.refused[window] += len(events)
            self.reasons[type(exc).__name__] += 1
            return
        if status != 202:
            self.refused[window] += len(events)
            self.reasons[f"{status} {_reason(text)}"] += 1
            return
        data = msgspec.json.decode(text)["data"]
        for accepted in data["ids"]:
            self.acknowledged[accepted["id"]] = Sent(window, due)
        self.refused[window] += len(data.get("rejected_events") or ())


# -- the campaign ----------------------------------------------------------------------------


@dataclass
class Window:
    index: int
    fault: str
    at_s: float = math.nan
    down_s: float = 0.0
    offered: int = 0
    acknowledged: int = 0
    refused: int = 0
    delivered: int = 0
    missing: int = 0
    duplicates: int = 0
    lateness_p50_s: float = math.nan
    lateness_p99_s: float = math.nan
    lateness_max_s: float = math.nan
    recovery_s: float = math.nan
    capped_peak: int = 0
    limited_peak: int = 0
    limited_peak_per_s: int = 0
    struck_wall: float = math.nan
    begun_wall: float = 0.0
    ended_wall: float = 0.0


@dataclass
class Campaign:
    options: argparse.Namespace
    workdir: Path
    rng: random.Random
    server: Server | None = None
    broker: LocalKafkaBroker | None = None
    members: list[Member] = field(default_factory=list)
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    limited_arrivals: list[float] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    started: float = 0.0

    @property
    def api(self) -> Member:
        return self.members[0]

    def role(self, name: str) -> list[Member]:
        return [m for m in self.members if m.role == name]

    def kinds(self) -> tuple[str, ...]:
        possible: tuple[str, ...] = PROCESS_KINDS
        if isinstance(self.server, PrivateServer):
            possible += DATABASE_KINDS
        if self.broker is not None:
            possible += KAFKA_KINDS
        chosen = self.options.kinds or possible
        return tuple(kind for kind in chosen if kind in possible)

    async def run(self) -> list[Window]:
        options = self.options
        capped = ReceiverProcess(delay=options.receiver_delay)
        limited = ReceiverProcess(delay=options.receiver_delay)
        await capped.start()
        await limited.start()
        try:
            database_url = self._database()
            if options.kafka:
                self.broker = LocalKafkaBroker()
                await asyncio.to_thread(self._start_broker)
            self._start_cluster(database_url, capped, limited)
            for member in self.members:
                await member.until_started()
            load = Load(
                f"http://127.0.0.1:{self._api_port}",
                [capped.url(), limited.url()],
                options.rate,
                options.lead,
            )
            stop = asyncio.Event()
            self.started = time.monotonic()
            loader = asyncio.create_task(load.run(stop))
            collector = asyncio.create_task(self._collect(capped, limited))
            try:
                await self._faults(load, capped, limited)
            finally:
                stop.set()
                await loader
            await self._drain(load, capped, limited)
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            self._account(load)
            self.refusals = load.reasons
            return self.windows
        finally:
            for member in self.members:
                member.stop()
            await capped.close()
            await limited.close()
            if self.broker is not None:
                self.broker.close()
            if self.server is not None:
                self.server.close()

    def _start_broker(self) -> None:
        assert self.broker is not None
        try:
            self.broker.start()
            self.broker.wait_until_ready()
        except KafkaBrokerError as exc:
            raise BenchError(f"the local Kafka broker did not start: {exc}") from None

    def _database(self) -> str:
        if self.options.database_url:
            self.server = Server(self.options.database_url)
        else:
            self.server = PrivateServer.start()
        name = f"timefuse_chaos_{uuid.uuid4().hex[:8]}"
        database_url = self.server.create_database(name)
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            # Acknowledged means committed to disk, so an immediate shutdown keeps it.
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(
                    sql.Identifier(name)
                )
            )
        return database_url

    def _start_cluster(
        self, database_url: str, capped: ReceiverProcess, limited: ReceiverProcess
    ) -> None:
        options = self.options
        limits = {
            f"127.0.0.1:{capped.port}": {"concurrency": options.cap},
            f"127.0.0.1:{limited.port}": {"rate": options.dest_rate, "burst": options.dest_burst},
        }
        env = fleet_env(
            database_url,
            {
                "TIMEFUSE_DESTINATION_LIMITS": json.dumps(limits),
                "TIMEFUSE_WORKER_DEAD_AFTER_SECONDS": str(options.dead_after),
                "TIMEFUSE_RETRY_BASE_MS": "500",
                "TIMEFUSE_RETRY_CAP_MS": "5000",
            },
        )
        if self.broker is not None:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
        migrate = subprocess.run(
            [sys.executable, "-m", "timefuse", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if migrate.returncode != 0:
            raise BenchError(f"timefuse migrate failed:\n{migrate.stderr.strip()[-2000:]}")
        self._api_port = free_port()
        api_env = {**env, "TIMEFUSE_WORKER_ID": "chaos-api"}
        self.members.append(
            Member("api", ["--port", str(self._api_port)], api_env, self.workdir / "api.log")
        )
        for n in range(options.ingest if self.broker is not None else 0):
            ingest_env = {**env, "TIMEFUSE_WORKER_ID": f"chaos-ingest-{n}"}
            log = self.workdir / f"ingest-{n}.log"
            self.members.append(Member("ingest", [], ingest_env, log))
        for n in range(options.dispatchers):
            dispatch_env = {**env, "TIMEFUSE_WORKER_ID": f"chaos-dispatch-{n}"}
            log = self.workdir / f"dispatch-{n}.log"
            self.members.append(Member("dispatch", [], dispatch_env, log))
        for member in self.members:
            member.spawn()

    async def _collect(self, capped: ReceiverProcess, limited: ReceiverProcess) -> None:
        while True:
            await self._take(capped, limited)
            await asyncio.sleep(0.5)

    async def _take(self, capped: ReceiverProcess, limited: ReceiverProcess) -> None:
        for receiver in (capped, limited):
            for webhook_id, arrived in await receiver.take():
                self.arrivals[webhook_id].append(arrived)
                if receiver is limited:
                    self.limited_arrivals.append(arrived)

    async def _faults(self, load: Load, capped: ReceiverProcess, limited: ReceiverProcess) -> None:
        options = self.options
        strikes = self._strikes()
        window = Window(0, "none", begun_wall=time.time())
        await asyncio.sleep(options.interval)
        await self._peaks(window, capped, limited)
        window.ended_wall = time.time()
        self.windows.append(window)
        for index in range(1, options.faults + 1):
            load.window = index
            kind = next(strikes)
            window = Window(index, kind, begun_wall=time.time())
            begun = time.monotonic()
            await asyncio.sleep(self.rng.uniform(0.1, 0.5) * options.interval)
            window.at_s = round(time.monotonic() - self.started, 1)
            window.struck_wall = time.time()
            print(f"  fault {index}/{options.faults}: {kind} at {window.at_s:.1f} s", flush=True)
            window.down_s = await self._strike(kind)
            rest = options.interval - (time.monotonic() - begun)
            await asyncio.sleep(max(rest, options.interval / 3))
            await self._peaks(window, capped, limited)
            window.ended_wall = time.time()
            self.windows.append(window)

    @staticmethod
    async def _peaks(window: Window, capped: ReceiverProcess, limited: ReceiverProcess) -> None:
        """The most requests each receiver held at once since the last look (the window's,
        or the drain's for the last window), kept if more than the window saw already."""
        window.capped_peak = max(window.capped_peak, await capped.peak())
        window.limited_peak = max(window.limited_peak, await limited.peak())

    def _strikes(self) -> Iterator[str]:
        kinds = list(self.kinds())
        while True:
            self.rng.shuffle(kinds)
            yield from kinds

    async def _strike(self, kind: str) -> float:
        """Cause the fault, end it, and return how long it lasted."""
        begun = time.monotonic()
        if kind == "kill-api":
            await self._restart(self.api, self.rng.uniform(0.0, 2.0))
        elif kind == "kill-dispatch":
            member = self.rng.choice(self.role("dispatch"))
            await self._restart(member, self.rng.uniform(1.0, 8.0))
        elif kind == "kill-ingest":
            member = self.rng.choice(self.role("ingest"))
            await self._restart(member, self.rng.uniform(1.0, 5.0))
        elif kind == "stop-broker":
            broker = self.broker
            assert broker is not None
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(self.rng.uniform(5.0, 30.0))
            await asyncio.to_thread(self._start_broker)
        else:
            server = self.server
            assert isinstance(server, PrivateServer)
            mode = kind.rsplit("-", 1)[1]
            await asyncio.to_thread(server.halt, mode)
            await asyncio.sleep(self.rng.uniform(2.0, 5.0))
            await asyncio.to_thread(server.resume)
        return round(time.monotonic() - begun, 1)

    async def _restart(self, member: Member, down: float) -> None:
        member.kill()
        await asyncio.sleep(down)
        member.spawn()
        await member.until_started()

    async def _drain(self, load: Load, capped: ReceiverProcess, limited: ReceiverProcess) -> None:
        deadline = time.monotonic() + self.options.drain
        print(f"  load stopped; waiting up to {self.options.drain:g} s for the rest", flush=True)
        while time.monotonic() < deadline:
            await self._take(capped, limited)
            if all(event_id in self.arrivals for event_id in load.acknowledged):
                break
            await asyncio.sleep(0.5)
        # Anything sent twice after the last one arrived shows up here too.
        await asyncio.sleep(self.options.receiver_delay + 1.0)
        await self._take(capped, limited)
        if self.windows:
            last = self.windows[-1]
            await self._peaks(last, capped, limited)
            last.ended_wall = time.time()

    def _account(self, load: Load) -> None:
        by_window: dict[int, list[tuple[str, Sent]]] = defaultdict(list)
        for event_id, sent in load.acknowledged.items():
            by_window[sent.window].append((event_id, sent))
        per_second = _per_second_peaks(self.limited_arrivals)
        for window in self.windows:
            window.offered = load.offered[window.index]
            window.refused = load.refused[window.index]
            events = by_window[window.index]
            window.acknowledged = len(events)
            late: list[float] = []
            for event_id, sent in events:
                arrivals = self.arrivals.get(event_id)
                if not arrivals:
                    window.missing += 1
                    continue
                window.delivered += 1
                window.duplicates += len(arrivals) - 1
                late.append(max(0.0, min(arrivals) - sent.due))
            late.sort()
            window.lateness_p50_s = round(percentile(late, 50), 3)
            window.lateness_p99_s = round(percentile(late, 99), 3)
            window.lateness_max_s = round(late[-1], 3) if late else math.nan
            window.recovery_s = self._recovery(load, window)
            # The last window runs on into the drain, where the backlog of the faults goes out.
            end = window.ended_wall if window is not self.windows[-1] else math.inf
            window.limited_peak_per_s = max(
                (n for second, n in per_second.items() if window.begun_wall <= second + 1 <= end),
                default=0,
            )

    def _recovery(self, load: Load, window: Window) -> float:
        """The longest an event due around the fault (from 2 s before it to its end) waited
        after the fault began: for a killed dispatcher, how long its claims took to come back."""
        struck = window.struck_wall
        if math.isnan(struck):
            return math.nan
        waits = [
            min(arrivals) - max(sent.due, struck)
            for event_id, sent in load.acknowledged.items()
            if struck - 2.0 <= sent.due <= struck + window.down_s
            and (arrivals := self.arrivals.get(event_id))
        ]
        return round(max(waits), 3) if waits else math.nan


def _reason(body: bytes) -> str:
    """What a refusal said: the error, or the first rejected event's reason."""
    try:
        answer = msgspec.json.decode(body)
        data = answer.get("data") or {}
        rejected = data.get("rejected_events") if isinstance(data, dict) else None
        return str(rejected[0]["reason"] if rejected else answer.get("error") or answer)[:120]
    except (msgspec.DecodeError, AttributeError, LookupError, TypeError):
        return body[:120].decode(errors="replace")


def _per_second_peaks(arrivals: list[float]) -> dict[int, int]:
    """Arrivals in each whole second of the wall clock."""
    return dict(Counter(int(t) for t in arrivals))


# -- the command -----------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        known = ", ".join(ALL_KINDS)
        raise argparse.ArgumentTypeError(f"unknown fault {', '.join(unknown)!r}; known: {known}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timefuse bench chaos",
        description="Random kills and restarts during a steady load; what each fault cost.",
    )
    add = parser.add_argument
    add("--faults", type=_non_negative_int, default=20, help="faults, one per window (20)")
    add("--interval", type=positive_float, default=15.0, help="seconds per window (15)")
    add("--dispatchers", type=positive_int, default=3, help="dispatch processes (3)")
    add("--kafka", action="store_true",
        help="submit through a local Kafka broker and ingest consumers")  # fmt: skip
    add("--ingest", type=positive_int, default=2, help="ingest consumers with --kafka (2)")
    add("--rate", type=positive_int, default=200, help="events offered per second (200)")
    add("--lead", type=positive_float, default=1.0, help="seconds from sending to due (1)")
    add("--cap", type=positive_int, default=20, help="the capped receiver's cap (20)")
    add("--dest-rate", type=positive_float, default=150.0,
        help="the limited receiver's deliveries per second (150)")  # fmt: skip
    add("--dest-burst", type=positive_int, default=15,
        help="the limited receiver's burst (15)")  # fmt: skip
    add("--receiver-delay", type=positive_float, default=0.05,
        help="seconds each receiver holds a request (0.05)")  # fmt: skip
    add("--dead-after", type=positive_float, default=5.0,
        help="TIMEFUSE_WORKER_DEAD_AFTER_SECONDS of the cluster (5)")  # fmt: skip
    add("--drain", type=positive_float, default=120.0,
        help="most seconds to wait for the last events after the load stops (120)")  # fmt: skip
    add("--kinds", type=_kinds, default=None,
        help="comma list of the faults to use (default: all the deployment allows)")  # fmt: skip
    add("--seed", type=int, default=None, help="random seed, to repeat a campaign")
    add("--database-url", default=None,
        help="a PostgreSQL server (then no database faults); default: a private one")  # fmt: skip
    add("--json", dest="json_path", default=None, help="also write the report as JSON here")
    return parser


def main(argv: Sequence[str]) -> int:
    options = build_parser().parse_args(list(argv))
    if options.database_url and not options.database_url.startswith(
        ("postgres://", "postgresql://")
    ):
        print("timefuse bench chaos: --database-url must be a postgresql:// URL", file=sys.stderr)
        return 2
    if options.database_url and options.kinds and set(options.kinds) <= set(DATABASE_KINDS):
        print(
            "timefuse bench chaos: database faults need the private PostgreSQL "
            "(leave out --database-url)",
            file=sys.stderr,
        )
        return 2
    if options.kinds and not options.kafka and set(options.kinds) <= set(KAFKA_KINDS):
        print("timefuse bench chaos: Kafka faults need --kafka", file=sys.stderr)
        return 2
    seed = options.seed if options.seed is not None else random.randrange(1_000_000)
    print(
        f"timefuse bench chaos: {options.faults} faults, seed {seed}; {options.dispatchers} "
        f"dispatchers; capped receiver: at most {options.cap} at once; limited receiver: at "
        f"most {options.dest_rate:g} + {options.dest_burst} (burst) in any second",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="timefuse-chaos-") as tmp:
        campaign = Campaign(options, Path(tmp), random.Random(seed))
        try:
            windows = asyncio.run(campaign.run())
        except BenchError as exc:
            print(f"timefuse bench chaos: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
    print(render(windows))
    for reason, count in campaign.refusals.most_common(5):
        print(f"  refused {count} requests: {reason}")
    if options.json_path:
        report = {"seed": seed, "options": vars(options), "windows": [asdict(w) for w in windows]}
        Path(options.json_path).write_text(json.dumps(report, indent=2, default=str))
    return 1 if any(w.missing for w in windows) else 0


COLUMNS = (
    ("#", "index"), ("fault", "fault"), ("at s", "at_s"), ("down s", "down_s"),
    ("offered", "offered"), ("202", "acknowledged"), ("refused", "refused"),
    ("delivered", "delivered"), ("missing", "missing"), ("dup", "duplicates"),
    ("late p50", "lateness_p50_s"), ("late p99", "lateness_p99_s"), ("late max", "lateness_max_s"),
    ("wait after", "recovery_s"),
    ("cap peak", "capped_peak"), ("rate peak", "limited_peak"),
    ("rate peak/s", "limited_peak_per_s"),
)  # fmt: skip


def render(windows: Sequence[Window]) -> str:
    rows = [[_cell(getattr(w, name)) for _, name in COLUMNS] for w in windows]
    total = Window(-1, "total")
    for w in windows:
        for name in ("offered", "acknowledged", "refused", "delivered", "missing", "duplicates"):
            setattr(total, name, getattr(total, name) + getattr(w, name))
    total.lateness_max_s = max((w.lateness_max_s for w in windows if w.delivered), default=0.0)
    waits = [w.recovery_s for w in windows if not math.isnan(w.recovery_s)]
    total.recovery_s = max(waits, default=math.nan)
    total.capped_peak = max((w.capped_peak for w in windows), default=0)
    total.limited_peak = max((w.limited_peak for w in windows), default=0)
    total.limited_peak_per_s = max((w.limited_peak_per_s for w in windows), default=0)
    totals = [_cell(getattr(total, name)) for _, name in COLUMNS]
    totals[0] = ""
    header = [title for title, _ in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows, totals]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
        for r in [header, *rows, totals]
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    return str(value)
