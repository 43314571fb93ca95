"""The due floor's bookkeeping: looked up once a second, lowered by what is heard, never raised
past an event heard of while a lookup was under way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from timefuse.adapters.postgres.due_floor import LOOKUP_SECONDS, DueFloor

T = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
FRONT = datetime.min.replace(tzinfo=UTC)


def looked_up(at: datetime, event_id: str = "e-5", now: float = 100.0) -> DueFloor:
    floor = DueFloor()
    floor.listen(True)
    floor.begin_lookup()
    floor.end_lookup((at, event_id), now)
    return floor


def test_a_store_not_listening_reads_from_the_front_and_looks_nothing_up() -> None:
    floor = DueFloor(at=T, id="e-5")
    assert floor.params() == {"floor_at": FRONT, "floor_id": ""}
    assert not floor.lookup_due(1e9)


def test_a_lookup_sets_the_floor_until_a_second_has_passed() -> None:
    floor = looked_up(T, now=100.0)
    assert floor.params() == {"floor_at": T, "floor_id": "e-5"}
    assert not floor.lookup_due(100.0 + LOOKUP_SECONDS - 0.01)
    assert floor.lookup_due(100.0 + LOOKUP_SECONDS)


def test_an_event_heard_due_below_the_floor_lowers_it_to_that_time_and_any_id() -> None:
    floor = looked_up(T)
    floor.hear(T + timedelta(seconds=1))  # above: no change
    assert floor.params() == {"floor_at": T, "floor_id": "e-5"}
    floor.hear(T)  # the same time, an id that may sort before e-5
    assert floor.params() == {"floor_at": T, "floor_id": ""}
    floor.hear(T - timedelta(hours=1))
    assert floor.params() == {"floor_at": T - timedelta(hours=1), "floor_id": ""}


def test_look_now_and_a_due_time_without_a_zone_drop_the_floor_until_the_next_lookup() -> None:
    for heard in (None, datetime(2026, 12, 8, 1, 0)):
        floor = looked_up(T, now=100.0)
        floor.hear(heard)
        assert floor.params()["floor_at"] == FRONT
        assert floor.lookup_due(100.0)


def test_what_is_heard_while_a_lookup_is_under_way_holds_against_what_it_finds() -> None:
    # The lookup's snapshot may predate the event heard of: what it found can't raise the
    # floor past that event.
    floor = looked_up(T - timedelta(minutes=1))
    floor.begin_lookup()
    floor.hear(T - timedelta(seconds=30))
    floor.end_lookup((T, "e-9"), 200.0)
    assert floor.params() == {"floor_at": T - timedelta(seconds=30), "floor_id": ""}

    floor.begin_lookup()
    floor.hear(T + timedelta(seconds=30))  # above what it finds: no change to that
    floor.end_lookup((T, "e-9"), 300.0)
    assert floor.params() == {"floor_at": T, "floor_id": "e-9"}


def test_a_look_now_heard_while_a_lookup_is_under_way_leaves_no_floor() -> None:
    floor = looked_up(T)
    floor.begin_lookup()
    floor.hear(None)
    floor.end_lookup((T, "e-9"), 200.0)
    assert floor.params()["floor_at"] == FRONT
    assert floor.lookup_due(200.0)


def test_overlapping_lookups_keep_what_was_heard_since_the_first_began() -> None:
    floor = looked_up(T - timedelta(minutes=5))
    floor.begin_lookup()
    floor.hear(T - timedelta(minutes=2))
    floor.begin_lookup()  # a second, while the first is under way
    floor.end_lookup((T, "e-9"), 200.0)
    floor.end_lookup((T, "e-9"), 200.0)
    assert floor.params()["floor_at"] == T - timedelta(minutes=2)


def test_a_failed_lookup_leaves_the_floor_and_is_tried_again() -> None:
    floor = looked_up(T, now=100.0)
    floor.begin_lookup()
    floor.end_lookup(None, 200.0)
    assert floor.params() == {"floor_at": T, "floor_id": "e-5"}
    assert floor.lookup_due(200.0)


def test_losing_the_listening_connection_drops_the_floor() -> None:
    floor = looked_up(T)
    floor.listen(False)
    assert floor.params()["floor_at"] == FRONT
    floor.listen(True)
    assert floor.params()["floor_at"] == FRONT  # notifications were missed meanwhile


def test_a_floor_is_kept_while_any_of_several_connections_listens() -> None:
    floor = looked_up(T)
    floor.listen(True)  # a second watcher
    floor.listen(False)  # one of them stops: what was kept goes, the floor stays possible
    assert floor.lookup_due(1e9)
    floor.begin_lookup()
    floor.end_lookup((T, "e-7"), 200.0)
    assert floor.params() == {"floor_at": T, "floor_id": "e-7"}
    floor.listen(False)
    assert floor.params()["floor_at"] == FRONT
    assert not floor.lookup_due(1e9)
