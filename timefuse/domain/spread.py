"""Herd spreading: a deterministic offset within an event's delivery window."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta


def spread_offset(event_id: str, window_seconds: float) -> float:
    """A stable offset in ``[0, window_seconds)`` derived from the event id.

    Deterministic, so a retried submission or a restart places the event at the same moment,
    and uniform over ids, so a herd that allows a window spreads evenly across it.
    """
    if window_seconds <= 0:
        return 0.0
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return fraction * window_seconds


def first_due_time(event_id: str, scheduled_at: datetime, window_seconds: float) -> datetime:
    return scheduled_at + timedelta(seconds=spread_offset(event_id, window_seconds))
