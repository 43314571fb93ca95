"""Running one scenario end to end: start what it needs, measure, report, clean up."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TextIO, TypeVar

import aiohttp

from timefuse.bench.api import TimefuseApi
from timefuse.bench.context import Context
from timefuse.bench.options import KAFKA_SCENARIOS, BenchOptions, BenchUsageError, resolve
from timefuse.bench.processes import BenchError, ReceiverProcess, ServeProcess
from timefuse.bench.report import Report, Value, combine, write_json, write_table

Scenario = Callable[[Context], Awaitable[Report]]


class _Outcome(Protocol):
    @property
    def errors(self) -> int: ...


R = TypeVar("R", bound=_Outcome)

NO_KAFKA = (
    "{scenario} needs a Kafka cluster: set KAFKA_BOOTSTRAP_SERVERS or pass "
    "--kafka HOST:PORT (and, with --url, a deployment that has Kafka delivery enabled)"
)


def run_bench(args: argparse.Namespace) -> int:
    """``timefuse bench``: 0 when the run had no errors, 1 when it had, 2 for bad options."""
    try:
        options = resolve(args)
    except BenchUsageError as exc:
        print(f"timefuse bench: error: {exc}", file=sys.stderr)
        return 2
    if options.scenario in KAFKA_SCENARIOS and not options.kafka:
        print(
            f"timefuse bench: error: {NO_KAFKA.format(scenario=options.scenario)}", file=sys.stderr
        )
        return 2
    if options.scenario == "river":
        return _run_river(options)
    if options.scenario == "day":
        return _run_day(options)
    return _measure_and_write(
        options,
        lambda: combine([_run_once(options) for _ in range(options.runs)]),
        write_json,
        write_table,
    )


def _measure_and_write(
    options: BenchOptions,
    measure: Callable[[], R],
    to_json: Callable[[R, TextIO], None],
    to_table: Callable[[R, TextIO], None],
) -> int:
    """Measures and writes the report; the exit status: 1 when it had errors or could not finish."""
    try:
        report = measure()
    except BenchError as exc:
        print(f"timefuse bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if options.day is not None and options.day.report:  # the day scenario's --report PATH
        with open(options.day.report, "w", encoding="utf-8") as stream:
            to_json(report, stream)
    if options.json:
        to_json(report, sys.stdout)
    else:
        to_table(report, sys.stdout)
    return 1 if report.errors else 0


# The scenarios that start what they need themselves, and their run functions as entry points
# name them ("module:function"): a module is imported only when its scenario is chosen, as each
# brings its own dependencies.
_SELF_CONTAINED = {
    "cron": "timefuse.bench.cron:run_cron",
    "store": "timefuse.bench.store:run_store",
    "console": "timefuse.bench.console:run_console",
    "tenant-pages": "timefuse.bench.tenants:run_tenant_pages",
    "http-type": "timefuse.bench.types:run_http_type",
    "kafka-type": "timefuse.bench.types:run_kafka_type",
    "ingest-backlog": "timefuse.bench.kafka:run_ingest_backlog",
    "schedules": "timefuse.bench.schedules:run_schedules",
}


def _run_once(options: BenchOptions) -> Report:
    """One run of the scenario: in-process, or against a deployment."""
    entry = _SELF_CONTAINED.get(options.scenario)
    if entry is None:
        return asyncio.run(_run(options))
    module, _, function = entry.partition(":")
    run: Callable[[BenchOptions], Report] = getattr(importlib.import_module(module), function)
    return run(options)


def _run_river(options: BenchOptions) -> int:
    from timefuse.bench import river, river_report

    problem = river.usage_problem(options)
    if problem is not None:
        print(f"timefuse bench: error: {problem}", file=sys.stderr)
        return 2
    return _measure_and_write(
        options, lambda: river.run_river(options), river_report.write_json, river_report.write_table
    )


def _run_day(options: BenchOptions) -> int:
    from timefuse.bench import day, day_report

    return _measure_and_write(
        options, lambda: day.run_day(options), day_report.write_json, day_report.write_table
    )


def _scenario(name: str) -> Scenario:
    from timefuse.bench import scenarios

    if name == "deliver-kafka":
        from timefuse.bench.kafka import deliver_kafka

        return deliver_kafka
    return {
        "ingest": scenarios.ingest,
        "deliver-http": scenarios.at_once,
        "herd": scenarios.at_once,
        "steady": scenarios.steady,
    }[name]


def _serve_env(options: BenchOptions) -> dict[str, str]:
    env: dict[str, str] = {}
    if options.concurrency_given and options.scenario != "ingest":
        # All deliveries go to one receiver: the per-destination cap is the one that binds.
        env["TIMEFUSE_CONCURRENCY"] = str(options.concurrency)
        env["TIMEFUSE_DESTINATION_CONCURRENCY"] = str(options.concurrency)
    if options.kafka:
        env["KAFKA_BOOTSTRAP_SERVERS"] = options.kafka
    return env


def _target(options: BenchOptions, serve: ServeProcess | None) -> dict[str, Value]:
    if serve is None:
        return {"url": options.url, "self_hosted": False}
    store = serve.env.get("DATABASE_URL", "") or "postgresql"
    return {
        "url": serve.base_url,
        "self_hosted": True,
        "store": store.partition(":")[0],
        "ingest": "kafka" if serve.env.get("KAFKA_BOOTSTRAP_SERVERS") else "inline",
        "cpus": os.cpu_count(),
    }


def _unreachable(exc: aiohttp.ClientError, serve: ServeProcess | None) -> str:
    if serve is None:
        return f"cannot talk to timefuse: {exc}"
    if serve.exit_code is not None:
        return f"timefuse serve exited with {serve.exit_code}:\n{serve.log_tail()}"
    return f"cannot talk to timefuse serve: {exc}\n{serve.log_tail()}"


async def _run(options: BenchOptions) -> Report:
    receiver = ReceiverProcess(options.receiver_host)
    serve = None
    if options.self_hosted:
        serve = ServeProcess(_serve_env(options), options.profile, options.serve_log)
    api: TimefuseApi | None = None
    try:
        await receiver.start()
        if serve is not None:
            serve.start()
            await serve.wait_ready()
        base_url = serve.base_url if serve is not None else str(options.url)
        api = TimefuseApi(base_url, options.api_key)
        ctx = Context(options, api, receiver, serve, _target(options, serve))
        return await _scenario(options.scenario)(ctx)
    except aiohttp.ClientError as exc:
        raise BenchError(_unreachable(exc, serve)) from None
    finally:
        if api is not None:
            await api.close()
        await receiver.close()
        if serve is not None:
            serve.stop()
