"""Listing events a page at a time: GET /api/v1/events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, error_fields, running_api
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import StoreUnavailable
from timefuse.testing.factories import make_event

BASE = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


async def stored(api: Harness, *events: Event) -> list[Event]:
    assert len(await api.store.insert_many(events)) == len(events)
    return list(events)


def spread(n: int, **overrides: Any) -> list[Event]:
    """``n`` events, three to a scheduled instant, so ties are ordered by id."""
    return [
        make_event(scheduled_at=BASE + timedelta(minutes=i // 3), **overrides) for i in range(n)
    ]


def in_order(events: list[Event]) -> list[str]:
    return [event.id for event in sorted(events, key=lambda e: (e.scheduled_at, e.id))]


async def every_page(api: Harness, **params: str) -> tuple[list[str], int]:
    """Every listed id, following next_cursor, and how many pages it took."""
    ids: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(EVENTS, params=query)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        ids += [event["id"] for event in data["events"]]
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            return ids, pages


async def test_a_page_holds_events_in_schedule_order_with_every_field(api: Harness) -> None:
    events = await stored(api, *spread(5))

    response = await api.client.get(EVENTS)

    assert response.status_code == 200
    assert_envelope(response.json(), success=True)
    data = response.json()["data"]
    assert [event["id"] for event in data["events"]] == in_order(events)
    assert data["next_cursor"] is None
    first = data["events"][0]
    assert first["status"] == "PENDING"
    assert datetime.fromisoformat(first["scheduled_at"]) == BASE


async def test_pages_follow_the_cursor_without_gaps_or_repeats(api: Harness) -> None:
    events = await stored(api, *spread(25))

    ids, pages = await every_page(api, limit="7")

    assert ids == in_order(events)
    assert pages == 4


async def test_the_default_page_holds_100_events(api: Harness) -> None:
    await stored(api, *spread(101))

    response = await api.client.get(EVENTS)

    data = response.json()["data"]
    assert len(data["events"]) == 100
    assert data["next_cursor"] is not None


async def test_a_last_page_that_is_exactly_full_says_so_on_the_next(api: Harness) -> None:
    events = await stored(api, *spread(6))

    ids, pages = await every_page(api, limit="3")

    assert ids == in_order(events)
    assert pages in (2, 3)  # the store may or may not look one event ahead


async def test_filters_by_status_source_and_window(api: Harness) -> None:
    early = await stored(api, *spread(3, source="alpha"))
    late = await stored(
        api, *[make_event(source="alpha", scheduled_at=BASE + timedelta(hours=2)) for _ in range(2)]
    )
    await stored(api, *spread(4, source="beta"))
    dead = await api.attempted(EventStatus.DEAD_LETTER, source="alpha")

    by_source, _ = await every_page(api, source="alpha")
    by_status, _ = await every_page(api, status="dead_letter")
    window, _ = await every_page(
        api,
        source="alpha",
        scheduled_from=BASE.isoformat(),
        scheduled_to=(BASE + timedelta(hours=2)).isoformat(),
    )
    pending_beta, _ = await every_page(api, status="PENDING", source="beta")

    assert len(by_source) == 6
    assert by_status == [dead]
    # The window is half-open: an event scheduled exactly at scheduled_to is left out.
    assert window == in_order(early)
    assert not set(window) & {event.id for event in late}
    assert len(pending_beta) == 4


async def test_an_unknown_source_lists_nothing(api: Harness) -> None:
    await stored(api, *spread(2))

    response = await api.client.get(EVENTS, params={"source": "nobody"})

    assert response.json()["data"] == {"events": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "9" * 40}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"scheduled_from": "2031-05-01T12:00:00"}, "scheduled_from"),
        ({"scheduled_to": "tomorrow"}, "scheduled_to"),
        ({"source": " "}, "source"),
        ({"source": "s" * 101}, "source"),
        # No source holds a control character, and PostgreSQL can't take a NUL at all: a
        # store error (503) here would be retried by clients forever.
        ({"source": "bill\x00ing"}, "source"),
        ({"source": "bill\x1bing"}, "source"),
        (
            {"scheduled_from": "2031-05-02T00:00:00Z", "scheduled_to": "2031-05-01T00:00:00Z"},
            "scheduled_to",
        ),
    ],
)
async def test_a_bad_parameter_answers_400_naming_it(
    api: Harness, params: dict[str, str], field: str
) -> None:
    response = await api.client.get(EVENTS, params=params)

    assert response.status_code == 400, response.text
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {field}
    assert field in response.json()["message"]


async def test_every_bad_parameter_is_named_at_once(api: Harness) -> None:
    response = await api.client.get(EVENTS, params={"status": "x", "limit": "0", "cursor": "?"})

    assert error_fields(response) == {"status", "limit", "cursor"}


async def test_a_listing_with_the_store_down_answers_503(api: Harness) -> None:
    api.memory.faults.fail["list_events"] = [StoreUnavailable("gone")]

    response = await api.client.get(EVENTS)

    assert response.status_code == 503
    assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"
