"""Builders of valid domain objects for tests: override only what the test is about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from timefuse.domain.destination import destination_key
from timefuse.domain.event import Event, new_event_id
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord, ClaimRef, OutcomeUpdate

# What a retry outcome built by make_outcome waits before its next attempt.
RETRY_DELAY_SECONDS = 60.0


def make_event(**overrides: Any) -> Event:
    """A valid PENDING event, due now, with a unique id and a unique dedup key.

    Any field of :class:`~timefuse.domain.event.Event` may be overridden.
    ``next_attempt_at`` follows an overridden ``scheduled_at`` unless it is overridden too, and
    ``destination_key`` follows the destination (the canonical receiver name the API gives).
    """
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": new_event_id(now),
        "external_job_id": f"job-{uuid.uuid4().hex[:12]}",
        "source": "tests",
        "scheduled_at": now,
        "delivery_type": "http",
        "destination": "https://receiver.example/hooks/timefuse",
        "payload": b'{"hello": "world"}',
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    fields.setdefault("next_attempt_at", fields["scheduled_at"])
    fields.setdefault(
        "destination_key", destination_key(fields["delivery_type"], fields["destination"])
    )
    return Event(**fields)


def make_outcome(
    event: Event,
    worker_id: str | None = None,
    status: EventStatus = EventStatus.COMPLETED,
    **overrides: Any,
) -> OutcomeUpdate:
    """The outcome of an attempt on ``event`` (as a claim returned it), ending in ``status``.

    It quotes the event's claim (its ``claim_count``) and ``worker_id`` (default: the claim's
    holder). Defaults fit ``status``: a COMPLETED outcome carries ``executed_at``, a PENDING one
    (a retry) a delay of :data:`RETRY_DELAY_SECONDS`, a failure counts one more failed attempt.
    """
    now = datetime.now(UTC)
    worker = worker_id if worker_id is not None else (event.locked_by or "")
    succeeded = status is EventStatus.COMPLETED
    kind = OutcomeKind.SUCCESS if succeeded else OutcomeKind.RETRIABLE
    error = None if succeeded else "HTTP 503"
    fields: dict[str, Any] = {
        "ref": ClaimRef(event.id, event.claim_count, worker),
        "status": status,
        "retry_count": event.retry_count if succeeded else event.retry_count + 1,
        "last_error": error,
        "retry_delay_seconds": RETRY_DELAY_SECONDS if status is EventStatus.PENDING else None,
        "executed_at": now if succeeded else None,
        "attempt": AttemptRecord(
            attempt=event.attempts,
            started_at=now,
            duration_ms=12.5,
            outcome=kind,
            status_code=200 if succeeded else 503,
            error=error,
            worker=worker,
        ),
    }
    fields.update(overrides)
    return OutcomeUpdate(**fields)
