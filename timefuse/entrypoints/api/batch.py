"""Batch submission: size bounds, per-item rejections, and the all-rejected answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.access import FORBIDDEN_SOURCE, Principal
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.entrypoints.api.errors import (
    QUOTA_PENDING,
    QUOTA_RATE,
    VALIDATION_FAILED,
    ApiError,
    quota_code,
    retry_after,
    unprocessable,
)
from timefuse.entrypoints.api.models import (
    AcceptedId,
    BatchIn,
    BatchOut,
    EventIn,
    ItemWarning,
    RawFields,
    RejectedEvent,
    batch_out,
    read_event,
    unknown_field_message,
)
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics

# The seed's bound, and the default of TIMEFUSE_MAX_BATCH_EVENTS: it also caps one request's
# insert transaction.
MAX_BATCH_EVENTS = 1000

_fields_decoder = msgspec.json.Decoder(RawFields)

ItemsDecoder = msgspec.json.Decoder[Any]


def items_decoder(limit: int) -> ItemsDecoder:
    """A decoder of arrays of at most ``limit`` items, each kept raw.

    It fails at item ``limit + 1``, having built nothing for the rest: decoding 10 MB of
    ``{},{},...`` into a list to check its length afterwards would build millions of objects.
    (A struct of ``limit`` optional fields, decoded from an array, is how msgspec does that.)
    """
    fields = [
        (f"item{n}", msgspec.Raw, msgspec.field(default_factory=msgspec.Raw)) for n in range(limit)
    ]
    items = msgspec.defstruct("BatchItems", fields, array_like=True, forbid_unknown_fields=True)
    return msgspec.json.Decoder(items)


def check_size(body: BatchIn, decoder: ItemsDecoder, limit: int) -> list[msgspec.Raw]:
    """The items of the batch, each still raw, once their number is known to be in bounds."""
    text = bytes(body.events).strip()
    if not text or text == b"null":
        raise _invalid("events", "is required")
    if not text.startswith(b"["):
        raise _invalid("events", "must be an array of events")
    try:
        decoded = decoder.decode(text)
    except msgspec.ValidationError:
        # Every item decodes (as raw JSON): only the length can be wrong.
        raise _invalid("events", f"must hold 1 to {limit} events, got more") from None
    # JSON has no empty value, so only the fields past the last item are empty.
    items = [item for item in msgspec.structs.astuple(decoded) if item]
    if not items:
        raise _invalid("events", f"must hold 1 to {limit} events, got none")
    return items


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
    warnings: list[ItemWarning] = field(default_factory=list)
    foreign: int = 0


def _sort(items: list[msgspec.Raw], caller: Principal, *, reject_unknown: bool) -> _Sorted:
    out = _Sorted()
    for index, raw in enumerate(items):
        if not bytes(raw).lstrip().startswith(b"{"):
            # No field to name: the item itself is wrong.
            out.rejected.append(RejectedEvent(index, None, "must be a JSON object", []))
            continue
        item, unknown = read_event(_fields_decoder.decode(raw))
        source = item.source_text
        if source is not None and not caller.sees(source):
            out.foreign += 1
            out.rejected.append(_foreign(index, item, source))
            continue
        if unknown and reject_unknown:
            out.rejected.append(_unknown(index, item, unknown))
            continue
        out.warnings.extend(ItemWarning(index, n, unknown_field_message(n)) for n in unknown)
        out.positions.append(index)
        out.submissions.append(item.to_fields())
    return out


def _unknown(index: int, item: EventIn, names: list[str]) -> RejectedEvent:
    errors = [FieldErrorOut(name, unknown_field_message(name)) for name in names]
    external = item.to_fields()["external_job_id"]
    return RejectedEvent(
        index,
        external if isinstance(external, str) else None,
        "; ".join(f"{e.field}: {e.message}" for e in errors),
        errors,
    )


def _foreign(index: int, item: EventIn, source: str) -> RejectedEvent:
    message = f"this key may not submit events for source {source[:100]!r}"
    external = item.to_fields()["external_job_id"]
    return RejectedEvent(
        index,
        external if isinstance(external, str) else None,
        f"source: {message}",
        [FieldErrorOut("source", message)],
        FORBIDDEN_SOURCE,
    )


@dataclass(frozen=True, slots=True)
class Submitted:
    """A batch's result, and how long a source over its rate should wait (``None``: none
    was)."""

    out: BatchOut
    retry_after: float | None


async def submit_items(
    service: EventService,
    metrics: Metrics,
    items: list[msgspec.Raw],
    caller: Principal,
    *,
    reject_unknown: bool = False,
) -> Submitted:
    """Submit the items of a batch the caller may submit; reject the others by index.

    Raises 403 when every item is for a source the caller may not act for: nothing in the
    batch was anything it could have sent. Unknown fields of an item are named in the
    answer's warnings, or with ``reject_unknown`` make the item rejected.
    """
    sorted_items = _sort(items, caller, reject_unknown=reject_unknown)
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
    ids = [
        AcceptedId(positions[i], answer.id, answer.status.value, answer.duplicate)
        for i, answer in result.accepted
    ]
    waits = [r.quota.retry_after for r in result.rejected if r.quota is not None]
    rejected.extend(
        RejectedEvent(
            positions[r.index],
            r.external_job_id,
            r.reason,
            [FieldErrorOut(e.field, e.message) for e in r.errors],
            VALIDATION_FAILED if r.quota is None else quota_code(r.quota),
        )
        for r in result.rejected
    )
    rejected.sort(key=lambda r: r.index)
    accepted_at = {item.index for item in ids}
    warnings = [w for w in sorted_items.warnings if w.index in accepted_at]
    wait = max((w for w in waits if w is not None), default=None)
    out = batch_out(ids, rejected, stored=not service.buffered, warnings=warnings)
    return Submitted(out, wait)


def all_rejected(submitted: Submitted) -> ApiError:
    """The answer when nothing in a batch was accepted: 422, every item's errors listed; 429
    when every item was refused by its source's quota (with ``Retry-After`` when one was
    over its rate), as the same batch may pass later.

    ``errors`` names each bad field as ``events[<index>].<field>``; ``data`` still carries
    the batch result (``accepted`` 0 and every ``rejected_events`` entry), so a client reads
    rejections from the same place whether or not part of the batch went through.
    """
    out = submitted.out
    errors: list[FieldError] = []
    for r in out.rejected_events:
        item = f"events[{r.index}]"
        errors.extend(FieldError(f"{item}.{e.field}", e.message) for e in r.errors)
        if not r.errors:
            errors.append(FieldError(item, r.reason))
    message = f"all {out.rejected} events were rejected"
    codes = {r.code for r in out.rejected_events}
    if codes <= {QUOTA_RATE, QUOTA_PENDING}:
        wait = submitted.retry_after
        headers = retry_after(wait) if wait is not None else None
        code = QUOTA_RATE if QUOTA_RATE in codes else QUOTA_PENDING
        return ApiError(429, code, message, errors=errors, data=out, headers=headers)
    return unprocessable(errors, message, data=out)
