"""Batch submission: size bounds, per-item rejections, and the all-rejected answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.access import FORBIDDEN_SOURCE, Principal
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.entrypoints.api.errors import VALIDATION_FAILED, ApiError
from timefuse.entrypoints.api.jsonscan import count_items
from timefuse.entrypoints.api.models import (
    AcceptedId,
    BatchIn,
    BatchOut,
    EventIn,
    RejectedEvent,
)
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics

# The seed's bound, and the default of TIMEFUSE_MAX_BATCH_EVENTS: it also caps one request's
# insert transaction.
MAX_BATCH_EVENTS = 1000

_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_event_decoder = msgspec.json.Decoder(EventIn)


def check_size(body: BatchIn, limit: int = MAX_BATCH_EVENTS) -> list[msgspec.Raw]:
    """The items of the batch, each still raw, once their number is known to be in bounds.

    They are counted in the text first: decoding 10 MB of ``{},{},...`` to check its length
    afterwards would build millions of objects.
    """
    text = bytes(body.events).strip()
    if not text or text == b"null":
        raise _invalid("events", "is required")
    if not text.startswith(b"["):
        raise _invalid("events", "must be an array of events")
    count = count_items(text)
    if not count:
        raise _invalid("events", f"must hold 1 to {limit} events, got none")
    if count > limit:
        raise _invalid("events", f"must hold 1 to {limit} events, got {count}")
    return _items_decoder.decode(text)


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        400, VALIDATION_FAILED, f"{field} {message}", errors=[FieldError(field, message)]
    )


@dataclass
class _Sorted:
    """The items of a batch: those for the service, and those rejected before it."""

    positions: list[int] = field(default_factory=list)
    submissions: list[dict[str, object]] = field(default_factory=list)
    rejected: list[RejectedEvent] = field(default_factory=list)
    foreign: int = 0


def _sort(items: list[msgspec.Raw], caller: Principal) -> _Sorted:
    out = _Sorted()
    for index, raw in enumerate(items):
        if not bytes(raw).lstrip().startswith(b"{"):
            # No field to name: the item itself is wrong.
            out.rejected.append(RejectedEvent(index, None, "must be a JSON object", []))
            continue
        item = _event_decoder.decode(raw)
        source = item.source_text
        if source is not None and not caller.sees(source):
            out.foreign += 1
            out.rejected.append(_foreign(index, item, source))
            continue
        out.positions.append(index)
        out.submissions.append(item.to_fields())
    return out


def _foreign(index: int, item: EventIn, source: str) -> RejectedEvent:
    message = f"this key may not submit events for source {source[:100]!r}"
    external = item.to_fields()["external_job_id"]
    return RejectedEvent(
        index,
        external if isinstance(external, str) else None,
        f"source: {message}",
        [FieldErrorOut("source", message)],
    )


async def submit_items(
    service: EventService, metrics: Metrics, items: list[msgspec.Raw], caller: Principal
) -> BatchOut:
    """Submit the items of a batch the caller may submit; reject the others by index.

    Raises 403 when every item is for a source the caller may not act for: nothing in the
    batch was anything it could have sent.
    """
    sorted_items = _sort(items, caller)
    if sorted_items.foreign == len(items):
        raise ApiError(
            403, FORBIDDEN_SOURCE, "this key may not submit events for the sources of this batch"
        )
    rejected = sorted_items.rejected
    if rejected:
        # The service counts the rejections it sees; these never reach it.
        metrics.rejected.inc(len(rejected))
    result = await service.submit_batch(sorted_items.submissions)
    # The service numbers the items it was given; map them back to the client's positions.
    positions = sorted_items.positions
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
