"""Lease rules: a claim holds an event for a while; a claim that outlives its lease is lost.

A lease that expires means the worker died or hung mid-delivery. The attempt may or may not
have reached the receiver, so it counts as a failed attempt: otherwise an event that kills its
worker every time would be claimed forever. Stores implement these rules in their own
language (SQL) and the store contract tests hold them to this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from timefuse.domain.status import EventStatus

LEASE_EXPIRED_ERROR = "lease expired before the attempt reported an outcome"


@dataclass(frozen=True, slots=True)
class LeaseExpiry:
    status: EventStatus
    retry_count: int
    next_attempt_at: datetime | None


def expire_lease(
    *, attempts: int, retry_count: int, max_retries: int, due_at: datetime, now: datetime
) -> LeaseExpiry:
    """What an event whose lease expired becomes.

    It goes back to PENDING, due at once, with the attempt counted as failed; if that was its
    last allowed attempt it becomes DEAD_LETTER. It keeps its place among the due events (its
    due time, ``due_at``, unless that is later than now): it has waited longest.
    """
    failed = retry_count + 1
    if attempts >= max_retries + 1:
        return LeaseExpiry(EventStatus.DEAD_LETTER, failed, None)
    return LeaseExpiry(EventStatus.PENDING, failed, min(due_at, now))
