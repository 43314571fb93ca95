"""The status machine against the specification's own words, not against a copy of its table.

What the specification says (README "How it works", ARCHITECTURE "Semantics"):

- "PENDING → PROCESSING → COMPLETED, or FAILED (permanent failure), or DEAD_LETTER (retries
  ran out), or back to PENDING for a retry"; an expired lease "returns the event to PENDING
  and counts as an attempt" (DEAD_LETTER when that was its last one), and a dispatcher "hands
  back" what it can't start (PENDING).
- "CANCELLED only from PENDING: a claimed event can't be cancelled."
- "FAILED and DEAD_LETTER can be redelivered", and so can a completed event (the console
  redelivers "a completed, failed or dead-lettered one"): redelivery makes it PENDING.
- Nothing else: CANCELLED is final.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.status import (
    REDELIVERABLE_STATUSES,
    TERMINAL_STATUSES,
    EventStatus,
    IllegalTransition,
    can_transition,
    check_transition,
    statuses_that_may_become,
)

S = EventStatus

# Rows: the status an event is in; columns: the status it may become ("x").
SPECIFICATION = """
                PENDING  PROCESSING  COMPLETED  FAILED  DEAD_LETTER  CANCELLED
   PENDING         .         x           .        .         .            x
   PROCESSING      x         .           x        x         x            .
   COMPLETED       x         .           .        .         .            .
   FAILED          x         .           .        .         .            .
   DEAD_LETTER     x         .           .        .         .            .
   CANCELLED       .         .           .        .         .            .
"""


def specified_moves() -> set[tuple[str, str]]:
    header, *rows = [line.split() for line in SPECIFICATION.strip().splitlines()]
    moves = set()
    for current, *marks in rows:
        moves |= {(current, to) for to, mark in zip(header, marks, strict=True) if mark == "x"}
    return moves


MOVES = specified_moves()


def test_the_statuses_are_the_six_the_specification_names() -> None:
    names = {name for move in MOVES for name in move}
    assert (
        names
        == {s.value for s in S}
        == {
            "PENDING",
            "PROCESSING",
            "COMPLETED",
            "FAILED",
            "DEAD_LETTER",
            "CANCELLED",
        }
    )


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_allows_exactly_the_moves_the_specification_allows(current: S, target: S) -> None:
    allowed = (current.value, target.value) in MOVES
    assert can_transition(current, target) is allowed
    if allowed:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


@pytest.mark.parametrize("target", list(S))
def test_a_write_to_a_status_is_conditioned_on_every_status_it_may_follow(target: S) -> None:
    assert {s.value for s in statuses_that_may_become(target)} == {
        current for current, to in MOVES if to == target.value
    }


def test_terminal_statuses_are_those_nothing_leaves_but_a_redelivery() -> None:
    assert {s.value for s in TERMINAL_STATUSES} == {
        "COMPLETED",
        "FAILED",
        "DEAD_LETTER",
        "CANCELLED",
    }
    assert [s for s in S if s.is_terminal] == [s for s in S if s in TERMINAL_STATUSES]


def test_completed_failed_and_dead_letters_are_redeliverable_cancelled_ones_are_not() -> None:
    assert {s.value for s in REDELIVERABLE_STATUSES} == {"COMPLETED", "FAILED", "DEAD_LETTER"}


def test_an_illegal_transition_names_both_statuses() -> None:
    with pytest.raises(IllegalTransition, match="CANCELLED cannot become PENDING") as raised:
        check_transition(S.CANCELLED, S.PENDING)
    assert (raised.value.current, raised.value.target) == (S.CANCELLED, S.PENDING)


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_any_walk_of_allowed_moves_reads_as_the_specification_tells_it(targets: list[S]) -> None:
    path = [S.PENDING]
    for target in targets:
        if can_transition(path[-1], target):
            path.append(check_transition(path[-1], target))
    for before, after in itertools.pairwise(path):
        assert before is not S.CANCELLED  # final
        if after in (S.COMPLETED, S.FAILED, S.DEAD_LETTER):
            assert before is S.PROCESSING  # only an attempt (or a lease) ends an event
        if after is S.CANCELLED:
            assert before is S.PENDING  # never a claimed event
        if after is S.PROCESSING:
            assert before is S.PENDING  # only a pending event is claimed
