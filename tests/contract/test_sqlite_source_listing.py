"""SQLite: a source's listing and counts read index ranges of that source, never the table.

Every statement the adapter's listing and counting functions run is captured as executed
(bound values written in) and its EXPLAIN QUERY PLAN read: a scan of ``events``, or a sort
of what a range returned, would make a rare source's page cost what the table holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from timefuse.adapters.sqlite import SqliteEventStore, listing
from timefuse.adapters.sqlite.connection import connect
from timefuse.domain.cursor import Cursor
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import seed, utc_now

_STATUSES = list(EventStatus)


@pytest.fixture
async def filled(tmp_path: Path) -> Path:
    """A store of 3,000 events of a big source and 12 of a rare one, in every status."""
    path = tmp_path / "timefuse.db"
    store = Store(SqliteEventStore(str(path)))
    await store.open()
    base = utc_now()
    try:
        big = [
            make_event(source="big", status=_STATUSES[n % 6],
                       scheduled_at=base + timedelta(seconds=n))
            for n in range(3000)
        ]  # fmt: skip
        rare = [
            make_event(source="rare", status=_STATUSES[n % 6],
                       scheduled_at=base + timedelta(seconds=250 * n))
            for n in range(12)
        ]  # fmt: skip
        for start in range(0, len(big), 1000):
            await seed(store, *big[start : start + 1000])
        await seed(store, *rare)
    finally:
        await store.close()
    return path


@pytest.fixture
def traced(filled: Path) -> Iterator[tuple[sqlite3.Connection, list[str]]]:
    conn = connect(str(filled))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield conn, statements
    finally:
        conn.close()


def _plans(conn: sqlite3.Connection, statements: list[str]) -> list[tuple[str, list[str]]]:
    """Each captured SELECT with the details of its query plan."""
    conn.set_trace_callback(None)
    found = []
    for statement in statements:
        if statement.lstrip().upper().startswith("SELECT"):
            rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            found.append((statement, [str(row[3]) for row in rows]))
    return found


def _assert_never_walks_events(plans: list[tuple[str, list[str]]]) -> None:
    for statement, details in plans:
        for detail in details:
            assert not detail.startswith("SCAN events"), (statement, details)
            assert "TEMP B-TREE" not in detail, (statement, details)


@pytest.mark.parametrize(
    "query",
    [
        EventQuery(sources=["rare"]),
        EventQuery(sources=["rare"], status=EventStatus.DEAD_LETTER),
        EventQuery(sources=["rare", "big"], status=EventStatus.FAILED),
        EventQuery(sources=["rare"], scheduled_from=utc_now() + timedelta(seconds=500)),
    ],
    ids=["source", "source-and-status", "two-sources", "window"],
)
def test_a_sources_page_reads_its_ranges_of_the_source_index(
    traced: tuple[sqlite3.Connection, list[str]], query: EventQuery
) -> None:
    conn, statements = traced
    first = listing.list_events(conn, query, 1, None)
    assert first.next_cursor is not None
    listing.list_events(conn, query, 1, first.next_cursor)
    plans = _plans(conn, statements)
    ranges = [
        details
        for _, details in plans
        if any("events_source_status_schedule" in detail for detail in details)
    ]
    assert ranges, plans
    for details in ranges:
        assert any(
            detail.startswith("SEARCH events USING COVERING INDEX events_source_status_schedule")
            and "(source=? AND status=?" in detail
            for detail in details
        ), details
    _assert_never_walks_events(plans)


def test_a_page_reads_the_table_only_for_its_own_rows(
    traced: tuple[sqlite3.Connection, list[str]],
) -> None:
    conn, statements = traced
    listing.list_events(conn, EventQuery(sources=["rare"]), 5, None)
    row_reads = [
        details
        for _, details in _plans(conn, statements)
        if any(detail.startswith("SEARCH events USING INTEGER PRIMARY KEY") for detail in details)
    ]
    assert len(row_reads) == 1, row_reads


def test_a_sources_counts_read_the_counts_table_only(
    traced: tuple[sqlite3.Connection, list[str]],
) -> None:
    conn, statements = traced
    counts = listing.count_by_status(conn, frozenset({"rare"}))
    assert counts == dict.fromkeys(EventStatus, 2)
    plans = _plans(conn, statements)
    assert plans
    for statement, details in plans:
        assert "FROM timefuse_status_counts" in statement
        assert all(" events" not in f" {detail}" for detail in details), details


def test_the_pending_counts_of_many_sources_are_one_look_up_each_in_the_counts_table(
    traced: tuple[sqlite3.Connection, list[str]],
) -> None:
    conn, statements = traced
    sources = frozenset({"rare", "big", *(f"absent-{n}" for n in range(2000))})

    counts = listing.pending_by_source(conn, sources)

    assert counts == {"rare": 2, "big": 500}
    ((statement, details),) = _plans(conn, statements)
    assert "FROM timefuse_status_counts" in statement
    assert all(" events" not in f" {detail}" for detail in details), details
    assert any("USING PRIMARY KEY" in detail for detail in details), details


def test_a_cursor_in_the_middle_of_a_source_starts_its_ranges_there(
    traced: tuple[sqlite3.Connection, list[str]],
) -> None:
    conn, statements = traced
    after = Cursor(utc_now() + timedelta(days=1), "0")
    page = listing.list_events(conn, EventQuery(sources=["big"]), 10, after)
    assert page.events == []
    _assert_never_walks_events(_plans(conn, statements))
