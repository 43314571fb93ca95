"""``timefuse bench``'s command line: its options, their checks and per-scenario defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

SCENARIOS = {
    "ingest": "batch submissions of events due far ahead, until persisted",
    "deliver-http": "N events due at once over HTTP: delivered rate",
    "deliver-kafka": "N events due at once onto a Kafka topic (needs KAFKA_BOOTSTRAP_SERVERS)",
    "herd": "N events due at the same instant: drain time, lateness, errors, peak RSS",
    "steady": "a constant rate for a duration: lateness percentiles",
    "cron": "cron libraries (cronsim, croniter) on the DST rules and next-instant speed; "
    "in-process, -n schedules",
    "river": "N deliveries due at once by timefuse and by River (Go), against raw Go POSTs",
    "store": "the event store alone (insert, claim and complete, retention) against its bare "
    "driver; in-process",
    "console": "the console's pages on a store of -n events and on one of 1%; in-process",
    "tenant-pages": "a rare source's page and statistics against an unfiltered page, on a "
    "store of -n events and on one of 10%; in-process",
    "http-type": "the http delivery type alone against raw aiohttp POSTs; in-process",
    "kafka-type": "the kafka delivery type alone against a bare producer; in-process (needs "
    "KAFKA_BOOTSTRAP_SERVERS)",
    "ingest-backlog": "a Kafka ingest topic filled beforehand, drained into the store by the "
    "bench's own timefuse (needs KAFKA_BOOTSTRAP_SERVERS)",
    "day": "a day's events through REST, Kafka, PostgreSQL, dispatch and HTTP: the sustainable "
    "rate (the knee), then -n events at 80 % of it, per stage",
    "schedules": "-n schedules firing every minute (or --every SECONDS), on SQLite and "
    "PostgreSQL: occurrence lateness (created, delivered) and duplicates",
}
# Scenarios that run in the bench's own process, with no deployment to point at.
IN_PROCESS = frozenset({"cron", "store", "console", "tenant-pages", "http-type", "kafka-type"})
# Scenarios whose events are due at a chosen time (--lead).
DELIVERING = frozenset({"deliver-http", "deliver-kafka", "herd", "steady"})
BACKENDS = ("sqlite", "postgresql")
KAFKA_SCENARIOS = frozenset({"deliver-kafka", "kafka-type", "ingest-backlog"})

# (full size, --short size) per scenario.
EVENTS = {
    "ingest": (100_000, 2_000),
    "deliver-http": (20_000, 500),
    "deliver-kafka": (20_000, 500),
    "herd": (100_000, 1_000),
    "steady": (0, 0),
    "cron": (10_000, 1_000),
    "river": (20_000, 300),
    "store": (100_000, 2_000),
    "console": (1_000_000, 20_000),
    "tenant-pages": (300_000, 3_000),
    "http-type": (20_000, 1_000),
    "kafka-type": (20_000, 1_000),
    "ingest-backlog": (50_000, 2_000),
    "day": (1_000_000, 2_000),
    "schedules": (10_000, 200),
}
# Seconds of firing observed (whole minutes count), full and --short.
SCHEDULES_DURATION = (180.0, 60.0)
STORES = ("sqlite", "postgres")
# Schedule declarations in flight at once.
DECLARE_CONCURRENCY = 16
RIVER_RUNS = 2
MAX_DISPATCHERS = 32
INGEST_CONCURRENCY = (4, 2)
# ingest --single: concurrent clients each POSTing one event at a time.
SINGLE_CLIENTS = (50, 8)
STEADY_RATE = (1000.0, 100.0)
STEADY_DURATION = (60.0, 3.0)
MAX_PROCESSES = 32
# day: (full, --short) defaults.
DAY_KNEE_START = (1000.0, 100.0)
DAY_KNEE_MAX = (100_000.0, 400.0)
DAY_KNEE_FACTOR = (1.25, 2.0)
DAY_STEP_SECONDS = (20.0, 2.0)
DAY_KNEE_LATENESS = (1.0, 2.0)
DAY_LEAD = (5.0, 3.0)
DAY_STALL = (30.0, 20.0)

DESCRIPTION = """\
Load-test a timefuse deployment (--url) or one the bench starts itself (a `timefuse serve`
subprocess on the configured DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, else a temporary SQLite
file), with a built-in webhook receiver; or, in-process, one part of timefuse alone. Each
scenario also measures its physical baseline in the same run (raw aiohttp POSTs, the store's
driver, a raw Kafka producer) and reports timefuse's rate as a ratio of it. --runs N repeats
the whole run and reports the median of every figure.

scenarios:
""" + "\n".join(f"  {name:<14} {text}" for name, text in SCENARIOS.items())


class BenchUsageError(ValueError):
    """Options that don't fit together; the message says which."""


@dataclass(frozen=True)
class DayOptions:
    """``timefuse bench day``'s own options."""

    api: int = 1
    ingest: int = 1
    dispatch: int = 1
    clients: int = 8
    batch: int = 100
    partitions: int = 6
    lead: float = DAY_LEAD[0]
    rate: float | None = None  # None: 80 % of the knee
    knee_start: float = DAY_KNEE_START[0]
    knee_max: float = DAY_KNEE_MAX[0]
    knee_factor: float = DAY_KNEE_FACTOR[0]
    step_seconds: float = DAY_STEP_SECONDS[0]
    knee_lateness: float = DAY_KNEE_LATENESS[0]
    stall_seconds: float = DAY_STALL[0]
    report: str | None = None
    durability: str = "full"


@dataclass(frozen=True)
class BenchOptions:
    scenario: str
    url: str | None
    api_key: str | None
    events: int
    rate: float
    duration: float
    concurrency: int
    concurrency_given: bool
    short: bool
    json: bool
    lead: float | None
    receiver_host: str
    kafka: str | None
    profile: str | None
    serve_log: str | None
    runs: int = 1
    # river and store
    database_url: str | None = None
    # river only
    dispatchers: tuple[int, ...] = (1,)
    serve: bool = False
    py_spy: str | None = None
    # ingest only: one event per request, not batches of 1,000
    single: bool = False
    # store only
    backend: str = "sqlite"
    receivers: int = 1
    # console only
    keep: str | None = None
    # day only
    day: DayOptions | None = None
    # schedules only
    stores: tuple[str, ...] = STORES
    idle: int = 0
    every: int = 60

    @property
    def self_hosted(self) -> bool:
        return self.url is None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) == 0:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _dispatcher_counts(text: str) -> tuple[int, ...]:
    counts: list[int] = []
    for part in text.split(","):
        try:
            count = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a comma-separated list of whole numbers, got {text!r}"
            ) from None
        if not 1 <= count <= MAX_DISPATCHERS:
            raise argparse.ArgumentTypeError(
                f"each count must be 1..{MAX_DISPATCHERS}, got {count}"
            )
        if count not in counts:
            counts.append(count)
    return tuple(counts)


def _postgres_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(f"must be a postgresql:// URL, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """``timefuse bench``'s parser (the CLI hands it everything after ``bench``)."""
    sub = argparse.ArgumentParser(
        prog="timefuse bench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "scenario",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"one of {', '.join(SCENARIOS)}",
    )
    _add_sizes(sub)
    _add_target(sub)
    _add_river(sub)
    _add_day(sub)
    _add_schedules(sub)
    return sub


def _stores(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(STORES)}")
    return names


def _add_schedules(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("schedules scenario")
    group.add_argument(
        "--stores",
        type=_stores,
        metavar="STORE[,STORE]",
        help="the stores to measure, each with its own timefuse serve: sqlite, postgres "
        "(default both; postgres on --database-url, else a private server)",
    )
    group.add_argument(
        "--idle",
        type=positive_int,
        metavar="N",
        help="also declare N schedules that don't fire during the run (yearly), to show "
        "that schedules waiting cost the ticks nothing",
    )
    group.add_argument(
        "--every",
        type=_period,
        metavar="SECONDS",
        help="the schedules fire every SECONDS (a divisor of 60; default 60: cron "
        "'* * * * *'; else a six-field cron '*/SECONDS * * * * *')",
    )


def _period(text: str) -> int:
    value = positive_int(text)
    if 60 % value:
        divisors = "1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60"
        raise argparse.ArgumentTypeError(f"must divide 60 ({divisors}), got {value}")
    return value


def _add_sizes(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-n", "--events", type=positive_int, help="events to submit")
    sub.add_argument(
        "--rate",
        type=positive_float,
        help="steady: events per second; day: run at this rate instead of 80 %% of the knee",
    )
    sub.add_argument(
        "--duration", type=positive_float, help="steady, schedules: seconds to run (observe)"
    )
    sub.add_argument(
        "--concurrency",
        type=positive_int,
        help="deliveries (or, for ingest, batch requests) in flight at once",
    )
    sub.add_argument(
        "--single",
        action="store_true",
        help="ingest: POST each event alone (/api/v1/events), --concurrency clients (default 50)",
    )
    sub.add_argument("--short", action="store_true", help="tiny sizes, a few seconds per run")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument(
        "--runs",
        type=positive_int,
        help=f"measure everything this many times and report medians (default 1; river: "
        f"{RIVER_RUNS})",
    )
    sub.add_argument(
        "--lead",
        type=positive_float,
        help="seconds between the start of submission and the due time",
    )


def _add_target(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--url", type=_url, help="timefuse to test (default: start one)")
    sub.add_argument("--api-key", help="API key sent with every API call")
    sub.add_argument(
        "--receiver-host",
        default="127.0.0.1",
        help="address the built-in receiver listens on and timefuse posts to",
    )
    sub.add_argument(
        "--kafka",
        metavar="BOOTSTRAP_SERVERS",
        help="deliver-kafka, kafka-type, ingest-backlog, day: brokers (default: "
        "KAFKA_BOOTSTRAP_SERVERS; day starts a broker of its own when neither is set)",
    )
    sub.add_argument(
        "--backend",
        choices=BACKENDS,
        help="store, tenant-pages: the adapter to measure (default sqlite; postgresql with "
        "--database-url)",
    )
    sub.add_argument(
        "--receivers",
        type=positive_int,
        metavar="N",
        help="store: spread the events over N receivers (default 1)",
    )
    sub.add_argument(
        "--keep",
        metavar="DIR",
        help="console: keep the filled databases in DIR and reuse them on the next run",
    )
    sub.add_argument(
        "--serve-log",
        metavar="PATH",
        help="self-hosted: append timefuse serve's log to PATH (default: a temporary file)",
    )
    sub.add_argument(
        "--profile",
        metavar="PATH",
        help="self-hosted: run timefuse serve under cProfile, stats to PATH",
    )


def _add_river(sub: argparse.ArgumentParser) -> None:
    river = sub.add_argument_group("river scenario")
    river.add_argument(
        "--dispatchers",
        type=_dispatcher_counts,
        metavar="N[,N...]",
        help="timefuse dispatch processes to measure, e.g. 1,2,4 (River gets as many workers "
        "in all); default 1",
    )
    river.add_argument(
        "--database-url",
        type=_postgres_url,
        help="river, store, schedules, day, tenant-pages: a PostgreSQL server to make the runs' "
        "databases on (default: start a private one)",
    )
    river.add_argument(
        "--serve", action="store_true", help="also measure one `timefuse serve` process"
    )
    river.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile the delivering processes of run 1 with py-spy: flame graphs to DIR",
    )


def _process_count(text: str) -> int:
    count = positive_int(text)
    if count > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_PROCESSES}, got {count}")
    return count


def _batch_size(text: str) -> int:
    size = positive_int(text)
    if size > 1000:
        raise argparse.ArgumentTypeError(f"must be 1..1000 (a batch request's limit), got {size}")
    return size


def _growth(text: str) -> float:
    factor = positive_float(text)
    if factor <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 1, got {text}")
    return factor


def _add_day(sub: argparse.ArgumentParser) -> None:
    day = sub.add_argument_group("day scenario")
    for flag, role in (("--api", "api"), ("--ingest", "ingest"), ("--dispatch", "dispatch")):
        day.add_argument(
            flag, type=_process_count, metavar="N", help=f"`timefuse {role}` processes (default 1)"
        )
    day.add_argument(
        "--clients", type=positive_int, metavar="N", help="concurrent REST clients (default 8)"
    )
    day.add_argument(
        "--batch", type=_batch_size, metavar="N", help="events per batch request (default 100)"
    )
    day.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="partitions of the run's ingest topic (default 6)",
    )
    day.add_argument(
        "--knee-start", type=positive_float, metavar="RATE", help="first knee step, events/s"
    )
    day.add_argument(
        "--knee-max", type=positive_float, metavar="RATE", help="stop the knee search here"
    )
    day.add_argument(
        "--knee-factor", type=_growth, metavar="F", help="rate growth from one step to the next"
    )
    day.add_argument(
        "--step", type=positive_float, metavar="SECONDS", help="seconds of load per knee step"
    )
    day.add_argument(
        "--knee-lateness",
        type=positive_float,
        metavar="SECONDS",
        help="p99 lateness a knee step may have and still pass",
    )
    day.add_argument("--report", metavar="PATH", help="also write the JSON report to PATH")
    day.add_argument(
        "--durability",
        choices=("full", "async", "off"),
        help="the private PostgreSQL's commits: full (fsync and synchronous_commit on, the "
        "default), async (synchronous_commit off), off (no fsync, as in the tests)",
    )


_DAY_FLAGS = (
    "api", "ingest", "dispatch", "clients", "batch", "partitions", "knee_start", "knee_max",
    "knee_factor", "step", "knee_lateness", "report", "durability",
)  # fmt: skip


def _day_options(args: argparse.Namespace, size: int) -> DayOptions:
    def given(name: str, default: object) -> Any:
        value = getattr(args, name)
        return default if value is None else value

    return DayOptions(
        api=given("api", 1),
        ingest=given("ingest", 1),
        dispatch=given("dispatch", 1),
        clients=given("clients", 8),
        batch=given("batch", 100),
        partitions=given("partitions", 6),
        lead=given("lead", DAY_LEAD[size]),
        rate=args.rate,
        knee_start=given("knee_start", DAY_KNEE_START[size]),
        knee_max=given("knee_max", DAY_KNEE_MAX[size]),
        knee_factor=given("knee_factor", DAY_KNEE_FACTOR[size]),
        step_seconds=given("step", DAY_STEP_SECONDS[size]),
        knee_lateness=given("knee_lateness", DAY_KNEE_LATENESS[size]),
        stall_seconds=DAY_STALL[size],
        report=args.report,
        durability=given("durability", "full"),
    )


def resolve(args: argparse.Namespace) -> BenchOptions:
    """The options with every default filled in; :class:`BenchUsageError` if they clash."""
    scenario: str = args.scenario
    _check_combinations(args)
    size = 1 if args.short else 0
    steady = scenario == "steady"
    rate = args.rate or STEADY_RATE[size]
    default_duration = SCHEDULES_DURATION if scenario == "schedules" else STEADY_DURATION
    duration = args.duration or default_duration[size]
    events = args.events or (int(rate * duration) if steady else EVENTS[scenario][size])
    concurrency = args.concurrency or (
        SINGLE_CLIENTS[size] if args.single else _default_concurrency(scenario, size)
    )
    kafka = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    day = _day_options(args, size) if scenario == "day" else None
    if day is not None and day.knee_start > day.knee_max:
        raise BenchUsageError("--knee-start must not be above --knee-max")
    backend = args.backend or ("postgresql" if args.database_url else "sqlite")
    return BenchOptions(
        scenario=scenario,
        url=args.url,
        api_key=args.api_key,
        events=events,
        rate=rate,
        duration=duration,
        concurrency=concurrency,
        concurrency_given=args.concurrency is not None,
        short=args.short,
        json=args.json,
        lead=args.lead,
        receiver_host=args.receiver_host,
        kafka=kafka if scenario in KAFKA_SCENARIOS | {"day"} else None,
        profile=args.profile,
        serve_log=args.serve_log,
        dispatchers=args.dispatchers or (1,),
        runs=args.runs or (RIVER_RUNS if scenario == "river" and not args.short else 1),
        database_url=args.database_url,
        serve=args.serve,
        py_spy=args.py_spy,
        backend=backend,
        receivers=args.receivers or 1,
        single=args.single,
        keep=args.keep,
        day=day,
        stores=args.stores or STORES,
        idle=args.idle or 0,
        every=args.every or 60,
    )


def _check_combinations(args: argparse.Namespace) -> None:
    scenario = args.scenario
    if scenario not in ("steady", "day") and args.rate is not None:
        raise BenchUsageError("--rate applies to the steady and day scenarios only")
    if scenario not in ("steady", "schedules") and args.duration is not None:
        raise BenchUsageError("--duration applies to the steady and schedules scenarios only")
    if scenario != "schedules" and (
        args.stores is not None or args.idle is not None or args.every is not None
    ):
        raise BenchUsageError("--stores, --idle and --every apply to the schedules scenario only")
    if args.single and scenario != "ingest":
        raise BenchUsageError("--single applies to the ingest scenario only")
    if scenario == "steady" and args.events is not None:
        raise BenchUsageError(
            "steady sends --rate events per second for --duration seconds; drop -n/--events"
        )
    if args.kafka is not None and scenario not in KAFKA_SCENARIOS | {"day"}:
        raise BenchUsageError(
            f"--kafka applies to the {', '.join(sorted(KAFKA_SCENARIOS | {'day'}))} scenarios only"
        )
    day_given = [
        "--" + name.replace("_", "-") for name in _DAY_FLAGS if getattr(args, name) is not None
    ]
    if day_given and scenario != "day":
        raise BenchUsageError(f"{', '.join(day_given)} apply to the day scenario only")
    if scenario == "day":
        _check_day(args)
    if args.url is not None and (args.profile is not None or args.serve_log is not None):
        raise BenchUsageError("--profile and --serve-log need the bench's own timefuse; drop --url")
    river_only = {
        "--dispatchers": args.dispatchers,
        "--serve": args.serve or None,
        "--py-spy": args.py_spy,
    }
    given = [flag for flag, value in river_only.items() if value is not None]
    if scenario == "schedules":
        given = [flag for flag in given if flag != "--database-url"]
    if given and scenario != "river":
        raise BenchUsageError(f"{', '.join(given)} apply to the river scenario only")
    if args.database_url is not None and scenario not in (
        "river",
        "store",
        "schedules",
        "day",
        "tenant-pages",
    ):
        raise BenchUsageError(
            "--database-url applies to the river, store, schedules, day and tenant-pages "
            "scenarios only"
        )
    if args.backend is not None and scenario not in ("store", "tenant-pages"):
        raise BenchUsageError("--backend applies to the store and tenant-pages scenarios only")
    if args.backend == "sqlite" and args.database_url is not None:
        raise BenchUsageError("--database-url names a PostgreSQL server: drop --backend sqlite")
    if args.receivers is not None and scenario != "store":
        raise BenchUsageError("--receivers applies to the store scenario only")
    if args.keep is not None and scenario != "console":
        raise BenchUsageError("--keep applies to the console scenario only")
    if scenario == "river" and (args.url is not None or args.profile or args.serve_log):
        raise BenchUsageError(
            "river starts its own timefuse processes and PostgreSQL databases: drop --url, "
            "--profile and --serve-log (--py-spy profiles it)"
        )
    if scenario == "ingest-backlog" and (args.url is not None or args.api_key is not None):
        raise BenchUsageError(
            "ingest-backlog fills the topic before its own timefuse starts: drop --url"
        )
    if scenario == "schedules":
        given = [
            flag
            for flag, value in (
                ("--url", args.url),
                ("--profile", args.profile),
                ("--lead", args.lead),
            )
            if value is not None
        ]
        if given:
            raise BenchUsageError(
                f"schedules starts its own timefuse on each store and reads the store; "
                f"drop {given[0]}"
            )
    if args.lead is not None and scenario not in DELIVERING | {"river", "day"}:
        raise BenchUsageError("--lead applies to the delivery scenarios only")
    if scenario in IN_PROCESS:
        given = [
            flag
            for flag, value in (
                ("--url", args.url),
                ("--api-key", args.api_key),
                ("--profile", args.profile),
                ("--serve-log", args.serve_log),
                (
                    "--concurrency",
                    args.concurrency
                    if scenario in ("cron", "store", "console", "tenant-pages")
                    else None,
                ),
            )
            if value is not None
        ]
        if given:
            raise BenchUsageError(f"{scenario} runs in-process with no deployment; drop {given[0]}")


def _check_day(args: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--url", args.url),
            ("--profile", args.profile),
            ("--serve-log", args.serve_log),
            ("--concurrency", args.concurrency),
            ("--runs", args.runs),
        )
        if value is not None
    ]
    if args.durability is not None and args.database_url is not None:
        given.append("--durability (it sets up the private server; yours keeps its settings)")
    if given:
        raise BenchUsageError(
            f"day starts its own timefuse processes and runs once; drop {given[0]} (set "
            "TIMEFUSE_CONCURRENCY and the other settings in the environment; run it again for "
            "a second run)"
        )


def _default_concurrency(scenario: str, size: int) -> int:
    if scenario in ("cron", "store", "console", "tenant-pages"):
        return 1
    if scenario == "schedules":
        return DECLARE_CONCURRENCY
    if scenario == "kafka-type":
        return 1000  # the kafka type's own per-destination default is far higher
    if scenario in ("ingest", "ingest-backlog"):
        return INGEST_CONCURRENCY[size]
    # What the deployment runs toward one destination (the bench's receiver), so the baseline
    # runs with the same number of requests in flight as timefuse.
    from timefuse.config import ConfigError, DispatchSettings

    try:
        settings = DispatchSettings.from_env()
    except ConfigError as exc:
        raise BenchUsageError(str(exc)) from None
    if settings.destination_concurrency:
        return min(settings.concurrency, settings.destination_concurrency)
    return settings.concurrency
