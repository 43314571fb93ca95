from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.lease import expire_lease
from timefuse.domain.spread import first_due_time, spread_offset
from timefuse.domain.status import EventStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "retry_count", "max_retries", "status", "retries_after"),
    [
        (1, 0, 3, EventStatus.PENDING, 1),
        (3, 2, 3, EventStatus.PENDING, 3),
        (4, 3, 3, EventStatus.DEAD_LETTER, 4),
        (1, 0, 0, EventStatus.DEAD_LETTER, 1),
    ],
)
def test_an_expired_lease_counts_as_a_failed_attempt(
    attempts: int, retry_count: int, max_retries: int, status: EventStatus, retries_after: int
) -> None:
    expiry = expire_lease(
        attempts=attempts,
        retry_count=retry_count,
        max_retries=max_retries,
        due_at=NOW + timedelta(hours=1),
        now=NOW,
    )
    assert expiry.status is status
    assert expiry.retry_count == retries_after
    assert (expiry.next_attempt_at == NOW) is (status is EventStatus.PENDING)


def test_an_expired_lease_keeps_the_events_place_among_the_due() -> None:
    due = NOW - timedelta(minutes=5)
    expiry = expire_lease(attempts=1, retry_count=0, max_retries=3, due_at=due, now=NOW)
    assert expiry.next_attempt_at == due


@given(st.text(min_size=1, max_size=50), st.floats(min_value=0.001, max_value=1e6))
def test_spread_offsets_stay_inside_the_window(event_id: str, window: float) -> None:
    offset = spread_offset(event_id, window)
    assert 0.0 <= offset < window
    assert spread_offset(event_id, window) == offset


def test_spread_offsets_are_uniform_enough_to_flatten_a_herd() -> None:
    offsets = [spread_offset(f"event-{i}", 60.0) for i in range(6000)]
    per_ten_seconds = [sum(1 for o in offsets if k * 10 <= o < (k + 1) * 10) for k in range(6)]
    assert all(800 <= count <= 1200 for count in per_ten_seconds)


def test_no_window_means_no_offset() -> None:
    assert spread_offset("x", 0) == 0.0


def test_a_window_of_under_a_second_spreads_too() -> None:
    offsets = {spread_offset(f"event-{i}", 0.5) for i in range(100)}
    assert len(offsets) == 100
    assert all(0.0 <= offset < 0.5 for offset in offsets)
    assert max(offsets) > 0.45  # the whole window, not its start


def test_a_window_moves_the_first_due_time_by_the_events_own_offset() -> None:
    ids = [f"event-{i}" for i in range(200)]
    due = {i: first_due_time(i, NOW, 600.0) for i in ids}
    assert all(NOW <= at < NOW + timedelta(seconds=600) for at in due.values())
    assert len(set(due.values())) == len(ids)  # each event its own moment
    assert sum(1 for at in due.values() if at - NOW < timedelta(seconds=6)) < 10
    assert {first_due_time(i, NOW, 600.0) for i in ids} == set(due.values())  # stable
    assert first_due_time("event-1", NOW, 0.0) == NOW
