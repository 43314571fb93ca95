"""Session-wide services: one PostgreSQL server and one Kafka broker, started on first use."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.support.kafka_broker import KafkaBroker, kafka_broker
from tests.support.postgres_server import PostgresServer, postgres_server
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver
from timefuse.domain import destination

# Named by the pytest-xdist worker too: workers sharing one external server (the
# TIMEFUSE_TEST_DATABASE_URL one) never make the same database.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_database_names = (f"timefuse_test_{_WORKER}_{n}" for n in itertools.count(1))

# `make mutants` runs the fast tiers once per planted bug (pytest --hypothesis-profile=mutants):
# fewer examples, the same ones every run, so a mutant's verdict doesn't depend on luck.
settings.register_profile("mutants", max_examples=20, derandomize=True, deadline=None)


_durations: dict[str, float] = {}


def _durations_in_the_mutation_run() -> dict[str, float]:
    """Under `make mutants` (mutmut runs the tests from ./mutants): each test's time in
    mutmut's clean run; elsewhere nothing. Kept once read: mutmut's workers fork from a
    process that collected the tests, so they find it read (not kept while there is none
    yet: the first run writes it after that process started)."""
    stats = Path("mutmut-stats.json")
    if not _durations and "MUTANT_UNDER_TEST" in os.environ and stats.is_file():
        _durations.update(json.loads(stats.read_bytes()).get("duration_by_test", {}))
    return _durations


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make mutants`, a mutant's tests run fastest first. mutmut stops at the first
    failure, so a killed mutant dies in its quickest failing test instead of wherever its
    tests happened to come (a survivor runs them all either way): the same verdicts, sooner."""
    durations = _durations_in_the_mutation_run()
    if durations:
        items.sort(key=lambda item: (durations.get(item.nodeid, 0.0), item.nodeid))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    """Around a synchronous test, the policy has no loop.

    looptime asks the policy for the running loop around every test; on Python 3.11 that
    creates a loop for a synchronous one, which nobody closes and whose sockets later fail
    an unrelated test at garbage collection.
    """
    # pytest-asyncio hands an async test over wrapped in a synchronous function.
    if not inspect.iscoroutinefunction(inspect.unwrap(pyfuncitem.obj)):
        asyncio.set_event_loop(None)
    return (yield)


@pytest.fixture(autouse=True)
def _no_remembered_hosts() -> None:
    """Each test reads hosts anew: a host's canonical name remembered from another test (or,
    under `make mutants`, from the unmutated code the tests were collected with) would hide
    what this one changes."""
    destination._cached_canonical_host.cache_clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server (local, container or external: see tests/support)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_database(next(_database_names))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    """A running Kafka broker (local JVM, container or external: see tests/support).

    Shared by the whole session: tests isolate themselves with topic and group names of
    their own. A test that stops or kills it must start it again before it ends.
    """
    with kafka_broker() as broker:
        yield broker


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver on loopback that records what arrives."""
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., TimefuseProcess]]:
    """Starts ``timefuse <command>`` processes; every one is killed at the end."""
    started: list[TimefuseProcess] = []

    def start(env: dict[str, str], command: str = "serve") -> TimefuseProcess:
        process = TimefuseProcess(tmp_path, env, command=command)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
