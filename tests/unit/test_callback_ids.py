"""A completion notice's id: one per end of a claim, never shared with another copy of its
parent."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from timefuse.domain.callback import callback_event
from timefuse.domain.status import EventStatus
from timefuse.testing.factories import make_event

PARENT = make_event(callback_url="https://notify.example/done", claim_count=1)


def notice_id(parent_created_offset: float = 0.0, claim_count: int = 1) -> str:
    created = PARENT.created_at + timedelta(seconds=parent_created_offset)
    parent = replace(PARENT, created_at=created, claim_count=claim_count)
    notice = callback_event(
        parent,
        EventStatus.COMPLETED,
        now=parent.created_at,
        attempts=1,
        retry_count=0,
        status_code=200,
        response_excerpt=None,
        error=None,
    )
    assert notice is not None
    return notice.id


def test_the_same_end_of_the_same_claim_gives_the_same_notice() -> None:
    assert notice_id() == notice_id()


def test_another_claim_gives_another_notice() -> None:
    assert notice_id(claim_count=1) != notice_id(claim_count=2)


def test_a_parent_made_again_after_retention_gets_notices_of_its_own() -> None:
    # Same id (derived from the dedup key), claims counted from 0 again: only its creation differs.
    assert notice_id(parent_created_offset=0.0) != notice_id(parent_created_offset=86_400.0)
