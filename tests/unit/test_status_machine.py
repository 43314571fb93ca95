from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.status import (
    TERMINAL_STATUSES,
    EventStatus,
    IllegalTransition,
    can_transition,
    check_transition,
)

S = EventStatus

LEGAL = {
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.CANCELLED),
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.PENDING),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.DEAD_LETTER),
    (S.COMPLETED, S.PENDING),
    (S.FAILED, S.PENDING),
    (S.DEAD_LETTER, S.PENDING),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_allows_exactly_the_legal_transitions(current: S, target: S) -> None:
    assert can_transition(current, target) is ((current, target) in LEGAL)


def test_an_illegal_transition_names_both_statuses() -> None:
    with pytest.raises(IllegalTransition, match="CANCELLED cannot become PENDING"):
        check_transition(S.CANCELLED, S.PENDING)


def test_a_claimed_event_cannot_be_cancelled() -> None:
    assert not can_transition(S.PROCESSING, S.CANCELLED)


def test_cancelled_is_final() -> None:
    assert not any(can_transition(S.CANCELLED, target) for target in S)


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_any_walk_of_legal_steps_only_leaves_pending_through_a_claim_or_cancel(
    targets: list[S],
) -> None:
    status = S.PENDING
    for target in targets:
        if not can_transition(status, target):
            continue
        if status is S.PENDING:
            assert target in (S.PROCESSING, S.CANCELLED)
        if status in TERMINAL_STATUSES:
            assert target is S.PENDING
        status = check_transition(status, target)
    assert isinstance(status, S)
