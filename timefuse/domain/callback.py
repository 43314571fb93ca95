"""Completion callbacks: the child event that tells a URL how its parent event ended.

An event with ``callback_url`` gets one POSTed notice when it completes; with
``failure_callback_url``, one when it ends FAILED or DEAD_LETTER, whether its last attempt
reported that outcome or lease recovery dead-lettered it (its worker died mid-attempt). Each
notice is an ordinary http event (signed, retried, guarded like any other) whose ``parent_id``
names the event it reports on. Its id is derived from the parent's id and claim, so writing it
twice (a retried write) stores it once, and a claim ended by recovery (which fences its
worker's late outcome out) is reported once.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from timefuse.domain.destination import destination_key
from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.status import EventStatus

CALLBACK_DELIVERY_TYPE = "http"
RESPONSE_EXCERPT_BYTES = 1024
_NAMESPACE = uuid.UUID("6f1c2a4e-5b7d-4c1e-9a3f-0d8e2b6c4a10")
_KINDS = {
    EventStatus.COMPLETED: "event.completed",
    EventStatus.FAILED: "event.failed",
    EventStatus.DEAD_LETTER: "event.dead_lettered",
}


def callback_url_for(event: Event, status: EventStatus) -> str | None:
    """Where to report ``event`` ending in ``status``; ``None`` when nobody asked."""
    if status is EventStatus.COMPLETED:
        return event.callback_url
    if status in (EventStatus.FAILED, EventStatus.DEAD_LETTER):
        return event.failure_callback_url
    return None


def callback_event(
    parent: Event,
    status: EventStatus,
    *,
    now: datetime,
    attempts: int,
    retry_count: int,
    status_code: int | None,
    response_excerpt: str | None,
    error: str | None,
) -> Event | None:
    """The notice of ``parent`` ending in ``status``, due ``now``; ``None`` without a URL."""
    url = callback_url_for(parent, status)
    if url is None:
        return None
    notice = {
        "type": _KINDS[status],
        "event_id": parent.id,
        "external_job_id": parent.external_job_id,
        "source": parent.source,
        "status": status.value,
        "attempts": attempts,
        "retry_count": retry_count,
        "status_code": status_code,
        "response_excerpt": response_excerpt,
        "error": error,
        "at": now.isoformat(),
    }
    # One notice per claim's end, so a retried write stores it once; the parent's creation
    # time too, so a parent resubmitted after retention removed it (same id, claims counted
    # from 0 again) gets notices of its own, not the earlier copy's still kept.
    seed = f"{parent.id}/{parent.created_at.isoformat()}/{parent.claim_count}/{status.value}"
    child_id = str(uuid.uuid5(_NAMESPACE, seed))
    return Event(
        id=child_id,
        external_job_id=f"callback/{parent.id}",
        source=parent.source,
        scheduled_at=now,
        delivery_type=CALLBACK_DELIVERY_TYPE,
        destination=url,
        # ASCII escapes: an error text a plugin built from odd bytes (a lone surrogate) still
        # encodes, so the notice can never stop its parent's outcome from being written.
        payload=json.dumps(notice, separators=(",", ":"), ensure_ascii=True).encode(),
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
        max_retries=parent.max_retries,
        destination_key=destination_key(CALLBACK_DELIVERY_TYPE, url),
        parent_id=parent.id,
    )


def lease_expiry_callback(parent: Event, *, now: datetime) -> Event | None:
    """The notice of ``parent`` dead-lettered by lease recovery, due ``now``; ``None`` when it
    isn't DEAD_LETTER or has no ``failure_callback_url``.

    ``parent`` is the event as recovery left it (its lost attempt counted, its claim count
    that of the lost claim). The lost attempt got no answer: no status code, no excerpt.
    """
    if parent.status is not EventStatus.DEAD_LETTER:
        return None
    return callback_event(
        parent,
        EventStatus.DEAD_LETTER,
        now=now,
        attempts=parent.attempts,
        retry_count=parent.retry_count,
        status_code=None,
        response_excerpt=None,
        error=LEASE_EXPIRED_ERROR,
    )


def response_excerpt(body: bytes) -> str | None:
    """A bounded excerpt of a receiver's answer, as text."""
    if not body:
        return None
    return body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")
