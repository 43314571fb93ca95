"""Changing a PENDING event in place: which fields may change, and the event a change gives.

A change names the fields it sets; the event it gives is checked by the same rules as a
submission (:func:`~timefuse.domain.validation.build_event`), so a change can't make an event
that could not have been submitted. What identifies the event and its job (id, external id,
source, delivery type) never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from timefuse.domain.event import Event
from timefuse.domain.validation import (
    FieldError,
    SubmissionLimits,
    ValidationFailed,
    build_event,
    submission_fields,
)

CHANGEABLE = (
    "scheduled_at", "destination", "payload", "http", "max_retries",
    "delivery_window_seconds", "retry_backoff_seconds", "retry_backoff_max_seconds",
    "callback_url", "failure_callback_url",
)  # fmt: skip
FIXED = ("external_job_id", "source", "delivery_type")
# Changes kept in the event's history (its ``extra``), the latest last.
HISTORY_EXTRA = "changes"
HISTORY_KEPT = 20
# The due time is worked out afresh only when what it derives from changes.
_TIMING = ("scheduled_at", "delivery_window_seconds")


def check_change_fields(changes: Mapping[str, object]) -> list[FieldError]:
    """Errors for the fields a change may not name; an empty change is one too."""
    errors = [
        FieldError(name, "can't be changed: it identifies the event")
        for name in FIXED
        if name in changes
    ]
    errors += [
        FieldError(name, "is not a field of an event that can be changed")
        for name in changes
        if name not in CHANGEABLE and name not in FIXED
    ]
    if not changes:
        errors.append(FieldError("body", f"names no field to change ({', '.join(CHANGEABLE)})"))
    return errors


def amend_event(
    current: Event, changes: Mapping[str, object], *, now: datetime, limits: SubmissionLimits
) -> Event:
    """The event ``changes`` make of ``current``, one version on; :class:`ValidationFailed`
    names every bad field.

    A field set to ``null`` goes back to its default. A new ``payload`` replaces a body given
    in ``http.body``, and an ``http.body`` replaces the payload. Attempts, retries and the
    attempt history stay; the due time is worked out afresh when ``scheduled_at`` or
    ``delivery_window_seconds`` changes, and kept otherwise (a retry keeps its backoff).
    """
    errors = check_change_fields(changes)
    if errors:
        raise ValidationFailed(errors)
    fields = submission_fields(current)
    fields.update(changes)
    new_http = changes.get("http")
    if "http" in changes and isinstance(new_http, Mapping) and new_http.get("body") is not None:
        if "payload" not in changes:
            fields["payload"] = None
    elif changes.get("payload") is not None and "http" not in changes:
        old_http = fields.get("http")
        if isinstance(old_http, Mapping):
            kept = {k: v for k, v in old_http.items() if k not in ("body", "body_encoding")}
            fields["http"] = kept or None
    # A pending event's scheduled_at may be past (it is retrying): an unchanged one is checked
    # as of when it was due, so only a new time must lie ahead.
    as_of = now if "scheduled_at" in changes else min(now, current.scheduled_at)
    try:
        built = build_event(fields, event_id=current.id, now=as_of, limits=limits)
    except ValidationFailed as exc:
        raise ValidationFailed(
            [e for e in exc.errors if e.field in changes or e.field.split(".")[0] in changes]
            or exc.errors
        ) from None
    timing_changed = any(name in changes for name in _TIMING)
    found = current.extra.get(HISTORY_EXTRA)
    history = list(found) if isinstance(found, list) else []
    history.append(
        {"version": current.version + 1, "at": now.isoformat(), "fields": sorted(changes)}
    )
    return replace(
        current,
        scheduled_at=built.scheduled_at,
        destination=built.destination,
        destination_key=built.destination_key,
        payload=built.payload,
        http=built.http,
        max_retries=built.max_retries,
        delivery_window_seconds=built.delivery_window_seconds,
        retry_backoff_seconds=built.retry_backoff_seconds,
        retry_backoff_max_seconds=built.retry_backoff_max_seconds,
        callback_url=built.callback_url,
        failure_callback_url=built.failure_callback_url,
        next_attempt_at=built.next_attempt_at if timing_changed else current.next_attempt_at,
        updated_at=now,
        version=current.version + 1,
        extra={**current.extra, HISTORY_EXTRA: history[-HISTORY_KEPT:]},
    )
