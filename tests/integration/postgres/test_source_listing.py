"""PostgreSQL: a source's listing reads ranges of the source index, never other sources' rows.

The listing statement is planned as the store's sessions run it: generic (prepared, with
``plan_cache_mode = force_generic_plan``), so the plan can't lean on the values of one call,
and custom, with the values, as in a session's first calls. Either must scan events only
through ``events_source_status_schedule`` (its partitions' copies), with no sequential scan.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql

from tests.integration.postgres.conftest import Db
from timefuse.adapters.postgres.listing import listing_statement
from timefuse.domain.cursor import Cursor
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import seed, utc_now

pytestmark = pytest.mark.postgres

_STATUSES = list(EventStatus)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@pytest.fixture
async def filled(pg_store: Store, db: Db) -> Store:
    """20,000 events of a big source over two weeks (several partitions), 12 of a rare one."""
    base = utc_now() - timedelta(days=7)
    big = [
        make_event(source="big", status=_STATUSES[n % 6],
                   scheduled_at=base + timedelta(seconds=60 * n))
        for n in range(20_000)
    ]  # fmt: skip
    rare = [
        make_event(source="rare", status=_STATUSES[n % 6],
                   scheduled_at=base + timedelta(hours=20 * n))
        for n in range(12)
    ]  # fmt: skip
    for start in range(0, len(big), 2000):
        await seed(pg_store, *big[start : start + 2000])
    await seed(pg_store, *rare)
    db.execute("ANALYZE")
    return pg_store


def _positional(text: str) -> tuple[str, list[str]]:
    """``text`` with its named placeholders numbered, as a prepared statement takes them."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _PLACEHOLDER.sub(number, text), names


def _plan(db: Db, query: EventQuery, after: Cursor | None, *, generic: bool) -> dict[str, Any]:
    statement, params = listing_statement(query, after)
    params = {**params, "limit": 101}
    text = statement.as_string(db)
    if not generic:
        row = db.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchone()
    else:
        positional, names = _positional(text)
        db.execute("SET plan_cache_mode = force_generic_plan")
        db.execute(f"PREPARE listing AS {positional}")
        values = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
        row = db.execute(
            sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE listing ({})").format(values)
        ).fetchone()
        db.execute("DEALLOCATE listing")
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(str(row[0]))
    return dict(plan[0]["Plan"])


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def _source_index_partitions(db: Db) -> set[str]:
    rows = db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = 'events_source_status_schedule'::regclass"
    ).fetchall()
    return {str(name) for (name,) in rows}


def _partitions_under(db: Db, rows: int) -> set[str]:
    found = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass AND c.reltuples < %s",
        (rows,),
    ).fetchall()
    return {str(name) for (name,) in found}


_QUERIES = [
    EventQuery(sources=["rare"]),
    EventQuery(sources=["rare"], status=EventStatus.DEAD_LETTER),
    EventQuery(sources=["rare", "big"], status=EventStatus.PENDING),
    EventQuery(sources=["rare"], scheduled_to=utc_now() + timedelta(days=30)),
]


async def test_a_sources_page_scans_events_through_the_source_index_only(
    filled: Store, db: Db
) -> None:
    allowed = _source_index_partitions(db)
    assert len(allowed) >= 3, "the test data should span several partitions"
    # The partitions at the data's ends hold a part of a day, as many rows as the hour the
    # suite runs at leaves there: the planner may read those through another index.
    small = _partitions_under(db, 1000)
    assert len(small) < len(allowed) - 3, "most partitions should hold whole days of rows"
    cursor = Cursor(utc_now() - timedelta(days=3), "0")
    for query in _QUERIES:
        for after in (None, cursor):
            for generic in (True, False):
                plan = _plan(db, query, after, generic=generic)
                scans = [
                    node
                    for node in _nodes(plan)
                    if str(node.get("Relation Name", "")).startswith("events")
                ]
                assert scans, plan
                for node in scans:
                    where = (query, after, "generic" if generic else "custom")
                    assert node["Node Type"] in ("Index Scan", "Index Only Scan"), (where, node)
                    if node["Relation Name"] in small:
                        continue  # any index reads a few hundred rows as cheaply
                    assert node["Index Name"] in allowed, (where, node)


async def test_a_sources_page_lists_what_the_plan_reads(filled: Store) -> None:
    page = await filled.list_events(EventQuery(sources=["rare"]), 5)
    assert [event.source for event in page.events] == ["rare"] * 5
    assert page.next_cursor is not None
