"""Session-wide services: one PostgreSQL server and one Kafka broker, started on first use."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.postgres_server import PostgresServer, postgres_server

_database_names = (f"timefuse_test_{n}" for n in itertools.count(1))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server (local, container or external: see tests/support)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_database(next(_database_names))
