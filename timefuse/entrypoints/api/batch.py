"""Batch submission: size bounds, per-item rejections, and the all-rejected answer."""

from __future__ import annotations

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.entrypoints.api.errors import VALIDATION_FAILED, ApiError
from timefuse.entrypoints.api.models import (
    AcceptedId,
    BatchItem,
    BatchOut,
    EventIn,
    RejectedEvent,
)
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics

# The seed's bound, kept for compatibility: it also caps one request's insert transaction.
MAX_BATCH_EVENTS = 1000


def check_size(items: list[BatchItem] | None, limit: int = MAX_BATCH_EVENTS) -> list[BatchItem]:
    if items is None:
        raise _invalid("events", "is required")
    if not items:
        raise _invalid("events", f"must hold 1 to {limit} events, got none")
    if len(items) > limit:
        raise _invalid("events", f"must hold 1 to {limit} events, got {len(items)}")
    return items


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        400, VALIDATION_FAILED, f"{field} {message}", errors=[FieldError(field, message)]
    )


async def submit_items(service: EventService, metrics: Metrics, items: list[BatchItem]) -> BatchOut:
    """Submit the object items of a batch; every other item is rejected by its index."""
    positions: list[int] = []
    submissions: list[dict[str, object]] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(items):
        if isinstance(item, EventIn):
            positions.append(index)
            submissions.append(item.to_fields())
        else:
            # No field to name: the item itself is wrong.
            rejected.append(RejectedEvent(index, None, "must be a JSON object", []))
    if rejected:
        # The service counts the rejections it sees; these never reach it.
        metrics.rejected.inc(len(rejected))
    result = await service.submit_batch(submissions)
    # The service numbers the items it was given; map them back to the client's positions.
    ids = [AcceptedId(positions[i], event_id) for i, event_id in result.accepted]
    rejected.extend(
        RejectedEvent(
            positions[r.index],
            r.external_job_id,
            r.reason,
            [FieldErrorOut(e.field, e.message) for e in r.errors],
        )
        for r in result.rejected
    )
    rejected.sort(key=lambda r: r.index)
    return BatchOut(len(ids), len(rejected), ids, rejected)


def all_rejected(out: BatchOut) -> ApiError:
    """The answer when nothing in a batch was accepted: 400, every item's errors listed.

    ``errors`` names each bad field as ``events[<index>].<field>``; ``data`` still carries
    the batch result (``accepted`` 0 and every ``rejected_events`` entry), so a client reads
    rejections from the same place whether or not part of the batch went through.
    """
    errors: list[FieldError] = []
    for r in out.rejected_events:
        item = f"events[{r.index}]"
        errors.extend(FieldError(f"{item}.{e.field}", e.message) for e in r.errors)
        if not r.errors:
            errors.append(FieldError(item, r.reason))
    message = f"all {out.rejected} events were rejected"
    return ApiError(400, VALIDATION_FAILED, message, errors=errors, data=out)
