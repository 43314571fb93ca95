"""Builders of valid domain objects for tests: override only what the test is about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.event import Event, new_event_id
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord, OutcomeUpdate


def make_event(**overrides: Any) -> Event:
    """A valid PENDING event, due now, with a unique id and a unique dedup key.

    ``next_attempt_at`` follows an overridden ``scheduled_at`` unless it is overridden too.
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
    return Event(**fields)


def make_outcome(
    event: Event,
    worker_id: str,
    status: EventStatus = EventStatus.COMPLETED,
    **overrides: Any,
) -> OutcomeUpdate:
    """The outcome of ``worker_id``'s attempt on ``event`` (as claimed), ending in ``status``.

    Defaults fit ``status``: a COMPLETED outcome carries ``executed_at``, a PENDING one (a retry)
    a ``next_attempt_at`` one minute out, a failure counts one more failed attempt.
    """
    now = datetime.now(UTC)
    succeeded = status is EventStatus.COMPLETED
    kind = OutcomeKind.SUCCESS if succeeded else OutcomeKind.RETRIABLE
    error = None if succeeded else "HTTP 503"
    fields: dict[str, Any] = {
        "event_id": event.id,
        "status": status,
        "retry_count": event.retry_count if succeeded else event.retry_count + 1,
        "last_error": error,
        "next_attempt_at": now + timedelta(minutes=1) if status is EventStatus.PENDING else None,
        "executed_at": now if succeeded else None,
        "attempt": AttemptRecord(
            attempt=event.attempts,
            started_at=now,
            duration_ms=12.5,
            outcome=kind,
            status_code=200 if succeeded else 503,
            error=error,
            worker=worker_id,
        ),
    }
    fields.update(overrides)
    return OutcomeUpdate(**fields)
