"""The pure core: events, their status machine and the rules that move them. Stdlib only."""

from __future__ import annotations

from timefuse.domain.event import Event, is_event_id, new_event_id
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind, classify_http_status
from timefuse.domain.retry import Decision, RetryPolicy
from timefuse.domain.status import (
    REDELIVERABLE_STATUSES,
    TERMINAL_STATUSES,
    EventStatus,
    IllegalTransition,
    can_transition,
    check_transition,
)
from timefuse.domain.validation import (
    FieldError,
    SubmissionLimits,
    ValidationFailed,
    build_event,
)

__all__ = [
    "REDELIVERABLE_STATUSES",
    "TERMINAL_STATUSES",
    "Decision",
    "DeliveryOutcome",
    "Event",
    "EventStatus",
    "FieldError",
    "IllegalTransition",
    "OutcomeKind",
    "RetryPolicy",
    "SubmissionLimits",
    "ValidationFailed",
    "build_event",
    "can_transition",
    "check_transition",
    "classify_http_status",
    "is_event_id",
    "new_event_id",
]
