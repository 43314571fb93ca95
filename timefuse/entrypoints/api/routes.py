"""The /api/v1/events operations: thin handlers over :class:`EventService`."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlencode

import msgspec
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from timefuse.domain.event import Event, is_event_id
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api import batch
from timefuse.entrypoints.api import external as by_external
from timefuse.entrypoints.api.access import FORBIDDEN_SOURCE, principal
from timefuse.entrypoints.api.body import BodyLimits, read_json
from timefuse.entrypoints.api.envelope import FieldErrorOut, ok
from timefuse.entrypoints.api.errors import (
    DUPLICATE_EVENT,
    EVENT_NOT_FOUND,
    EVENT_NOT_PENDING,
    EVENT_NOT_REDELIVERABLE,
    INVALID_EVENT_ID,
    VALIDATION_FAILED,
    VERSION_MISMATCH,
    ApiError,
    retry_after,
    unprocessable,
)
from timefuse.entrypoints.api.listing import (
    QUERY_PARAMS,
    has_control_characters,
    invalid,
    parse_listing,
)
from timefuse.entrypoints.api.models import (
    BATCH_FIELDS,
    EVENT_FIELDS,
    AcceptedOut,
    AttemptOut,
    BatchBody,
    BatchIn,
    BatchOut,
    Cancelled,
    EventBody,
    EventOut,
    EventPageOut,
    EventPatchIn,
    ItemWarning,
    RawFields,
    Submitted,
    accepted_message,
    accepted_out,
    attempt_out,
    event_out,
    read_event,
    unknown_batch_field_message,
    unknown_field_message,
)
from timefuse.entrypoints.api.operations import Operation
from timefuse.entrypoints.auth import Role
from timefuse.ports.store import CancelResult, RedeliverResult
from timefuse.service.events import AmendAnswer, EventService
from timefuse.service.metrics import Metrics

PREFIX = "/api/v1/events"
ADMIN_PREFIX = PREFIX + "/admin"

_fields_decoder = msgspec.json.Decoder(RawFields)
_patch_decoder = msgspec.json.Decoder(EventPatchIn)


class EventIdConvertor(Convertor[str]):
    """Any one path segment except the fixed names beside ``{id}``.

    ``GET /api/v1/events/batch`` must answer 405 (the path exists, for POST), not reach the
    event lookup as an id and answer 400; excluding the fixed names here lets Starlette's
    router see that the path exists with other methods.
    """

    # The regex is embedded in the route's: a fixed name is excluded whole, as the last
    # segment or followed by more ("admin/redeliver" is not event "admin"'s redelivery).
    regex = "(?!(?:batch|statistics|health|external|admin)(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ExternalIdConvertor(Convertor[str]):
    """The rest of the path, not empty: an external id may hold "/" (``orders/42``)."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class EventsApi:
    def __init__(
        self,
        service: EventService,
        metrics: Metrics,
        limits: BodyLimits,
        max_batch_events: int,
        *,
        reject_unknown: bool = False,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._limits = limits
        self._max_batch_events = max_batch_events
        self._batch_items = batch.items_decoder(max_batch_events)
        self._reject_unknown = reject_unknown

    async def submit(self, request: Request) -> Response:
        body, unknown = read_event(await read_json(request, _fields_decoder, self._limits))
        source = body.source_text
        if source is not None and not principal(request).sees(source):
            message = f"this key may not submit events for source {source[:100]!r}"
            raise ApiError(403, FORBIDDEN_SOURCE, message, errors=[FieldError("source", message)])
        warnings = [FieldErrorOut(name, unknown_field_message(name)) for name in unknown]
        if warnings and self._reject_unknown:
            errors = [FieldError(w.field, w.message) for w in warnings]
            named = ", ".join(w.field for w in warnings)
            raise unprocessable(errors, f"unknown fields: {named}")
        accepted = await self._service.submit(body.to_fields())
        return ok(
            accepted_out(accepted, warnings),
            202,
            message=accepted_message(accepted),
            headers={"Location": f"{PREFIX}/{accepted.id}"},
        )

    async def submit_batch(self, request: Request) -> Response:
        """Accept the valid events of a batch: 202 if any went through, else 422 (or 429).

        See :func:`timefuse.entrypoints.api.batch.all_rejected` for the all-rejected answer.
        """
        fields = await read_json(request, _fields_decoder, self._limits)
        unknown = [
            ItemWarning(None, name, unknown_batch_field_message(name))
            for name in fields
            if name not in BATCH_FIELDS
        ]
        if unknown and self._reject_unknown:
            errors = [FieldError(w.field, w.message) for w in unknown]
            named = ", ".join(w.field for w in unknown)
            raise ApiError(400, VALIDATION_FAILED, f"unknown fields: {named}", errors=errors)
        body = BatchIn(events=fields.get("events", msgspec.Raw()))
        items = batch.check_size(body, self._batch_items, self._max_batch_events)
        submitted = await batch.submit_items(
            self._service,
            self._metrics,
            items,
            principal(request),
            reject_unknown=self._reject_unknown,
        )
        out = submitted.out
        out.warnings[:0] = unknown
        if not out.accepted:
            raise batch.all_rejected(submitted)
        message = f"{out.accepted} accepted, {out.rejected} rejected"
        # Items refused for their source's rate may come back after this long.
        wait = submitted.retry_after
        return ok(out, 202, message=message, headers=retry_after(wait) if wait else None)

    async def get(self, request: Request) -> Response:
        event_id = _event_id(request)
        event = await self._service.get(event_id, sources=principal(request).sources)
        if event is None:
            raise _not_found(event_id)
        return ok(event_out(event))

    async def cancel(self, request: Request) -> Response:
        event_id = _event_id(request)
        sources = principal(request).sources
        result = await self._service.cancel(event_id, sources=sources)
        if result is CancelResult.NOT_FOUND:
            raise _not_found(event_id)
        # Read back for the answer; the event may have moved on (or been purged) meanwhile.
        event = await self._service.get(event_id, sources=sources)
        if result is CancelResult.NOT_PENDING:
            status = event.status.value if event is not None else "no longer PENDING"
            message = f"event {event_id} is {status}; only a PENDING event can be cancelled"
            raise ApiError(409, EVENT_NOT_PENDING, message)
        # Only a purge racing this request (retention keeps cancelled events for days) finds
        # nothing to read back; the short answer then is still true.
        data = event_out(event) if event is not None else Submitted(event_id, "CANCELLED")
        return ok(data, message="event cancelled")

    async def amend(self, request: Request) -> Response:
        event_id = _event_id(request)
        return await self._amend(request, event_id)

    async def amend_by_external_id(self, request: Request) -> Response:
        external_job_id = self._external_id(request)
        sources = _external_sources(request)
        events = await self._service.find_by_external_id(external_job_id, sources=sources)
        if not events:
            raise _no_external(external_job_id)
        # The most recent PENDING one; with none, the most recent (for its 409).
        pending = [event for event in events if event.status is EventStatus.PENDING]
        return await self._amend(request, (pending or events)[0].id, sources)

    async def _amend(
        self, request: Request, event_id: str, sources: frozenset[str] | None = None
    ) -> Response:
        """Change ``event_id`` among ``sources`` (default: every source the key acts for)."""
        body = await _read_changes(request, self._limits)
        wanted = body.version_wanted
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int)):
            message = "must be an integer: the version the change applies to"
            raise unprocessable([FieldError("if_version", message)], f"if_version {message}")
        outcome = await self._service.amend(
            event_id,
            body.to_changes(),
            if_version=wanted,
            sources=principal(request).sources if sources is None else sources,
        )
        event = outcome.event
        answer = outcome.answer
        if answer is AmendAnswer.NOT_FOUND or event is None:
            raise _not_found(event_id)
        if answer is AmendAnswer.NOT_PENDING:
            message = (
                f"event {event_id} is {event.status.value}; only a PENDING event can be changed"
            )
            raise ApiError(409, EVENT_NOT_PENDING, message, data=event_out(event))
        if answer is AmendAnswer.VERSION_MISMATCH:
            message = f"event {event_id} is at version {event.version}, not {wanted}"
            raise ApiError(412, VERSION_MISMATCH, message, data=event_out(event))
        if answer is AmendAnswer.DUPLICATE:
            message = (
                f"event {event.id}'s job {event.external_job_id!r} already has an event at "
                "that scheduled_at"
            )
            raise ApiError(409, DUPLICATE_EVENT, message)
        return ok(event_out(event), message="event changed")

    async def list_events(self, request: Request) -> Response:
        listing = parse_listing(request.query_params)
        sources = principal(request).sources
        page = await self._service.list_events(
            listing.query, listing.limit, listing.after, sources=sources
        )
        cursor = page.next_cursor.encode() if page.next_cursor is not None else None
        return ok(EventPageOut([event_out(event) for event in page.events], cursor))

    async def attempts(self, request: Request) -> Response:
        event_id = _event_id(request)
        records = await self._service.attempts(event_id, sources=principal(request).sources)
        if records is None:
            raise _not_found(event_id)
        return ok([attempt_out(record) for record in records])

    async def redeliver(self, request: Request) -> Response:
        event_id = _event_id(request)
        sources = principal(request).sources
        result = await self._service.redeliver(event_id, sources=sources)
        if result is RedeliverResult.NOT_FOUND:
            raise _not_found(event_id)
        # Read back for the answer: due now, the dispatcher may already have claimed it.
        event = await self._service.get(event_id, sources=sources)
        if event is None:  # purged meanwhile: retention raced the request
            raise _not_found(event_id)
        if result is RedeliverResult.NOT_REDELIVERABLE:
            message = (
                f"event {event_id} is {event.status.value}; only a COMPLETED, FAILED or "
                "DEAD_LETTER event can be redelivered"
            )
            raise ApiError(409, EVENT_NOT_REDELIVERABLE, message)
        return ok(event_out(event), message="event redelivered")

    async def latest_by_external_id(self, request: Request) -> Response:
        external_job_id = self._external_id(request)
        sources = _external_sources(request)
        events = await self._service.find_by_external_id(external_job_id, sources=sources)
        if not events:
            raise _no_external(external_job_id)
        # The store lists the most recently created first.
        return ok(event_out(events[0]))

    async def all_by_external_id(self, request: Request) -> Response:
        external_job_id = self._external_id(request)
        page = by_external.parse_page(request.query_params)
        sources = by_external.narrowed(principal(request).sources, page.source)

        async def newest(count: int) -> list[Event]:
            return await self._service.find_by_external_id(
                external_job_id, limit=count, sources=sources
            )

        events, position = await by_external.read_page(newest, page)
        headers = None
        if position is not None:
            query = {"cursor": position.encode(), "limit": str(page.limit)}
            if page.source is not None:
                query["source"] = page.source
            url = request.url.replace(query=urlencode(query))
            headers = {"Link": f'<{url.path}?{url.query}>; rel="next"'}
        return ok([event_out(event) for event in events], headers=headers)

    async def cancel_by_external_id(self, request: Request) -> Response:
        external_job_id = self._external_id(request)
        sources = _external_sources(request)
        count = await self._service.cancel_by_external_id(external_job_id, sources=sources)
        # Nothing cancelled: 404 only if no event has that id at all; events that exist but
        # are past PENDING are an answer ("none left to cancel"), not a missing resource.
        if count == 0 and not await self._service.find_by_external_id(
            external_job_id, sources=sources
        ):
            raise _no_external(external_job_id)
        return ok(Cancelled(count), message=f"{count} events cancelled")

    async def statistics(self, request: Request) -> Response:
        return ok(await self._service.statistics(sources=principal(request).sources))

    def _external_id(self, request: Request) -> str:
        value: str = request.path_params["external_job_id"]
        problem = external_id_problem(value, self._service.limits.max_external_job_id)
        if problem is not None:
            error = FieldError("external_job_id", problem)
            raise ApiError(400, VALIDATION_FAILED, f"external_job_id {problem}", errors=[error])
        return value


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>.+)`$")


async def _read_changes(request: Request, limits: BodyLimits) -> EventPatchIn:
    """A PATCH body: 400 if it can't be read, 422 naming a field no change may hold."""
    try:
        return await read_json(request, _patch_decoder, limits)
    except ApiError as exc:
        named = [_UNKNOWN_FIELD.match(error.message) for error in exc.errors or []]
        if exc.error_code != VALIDATION_FAILED or not named or None in named:
            raise
        errors = [
            FieldError(
                match["name"],
                "can't be changed"
                if match["name"] in EVENT_FIELDS
                else unknown_field_message(match["name"]),
            )
            for match in named
            if match is not None
        ]
        fields = ", ".join(error.field for error in errors)
        raise unprocessable(errors, f"unknown fields: {fields}") from None


def external_id_problem(value: str, max_length: int) -> str | None:
    """What is wrong with an external id from a path, by the rules a submitted one meets."""
    if not value.strip():
        return "must not be blank"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if has_control_characters(value):
        return "must not contain control characters"
    return None


def _external_sources(request: Request) -> frozenset[str] | None:
    """The sources an external-id operation spans: the key's, or the one ``source`` names."""
    errors: list[FieldError] = []
    source = by_external.source_param(request.query_params, errors)
    if errors:
        raise invalid(errors)
    return by_external.narrowed(principal(request).sources, source)


def _event_id(request: Request) -> str:
    raw: str = request.path_params["event_id"]
    if not is_event_id(raw):
        raise ApiError(400, INVALID_EVENT_ID, f"{raw[:80]!r} is not an event id (a UUID)")
    # Stored ids are canonical lower-case UUIDs; accept any spelling UUID() does.
    return str(uuid.UUID(raw))


def _not_found(event_id: str) -> ApiError:
    return ApiError(404, EVENT_NOT_FOUND, f"no event with id {event_id}")


def _no_external(external_job_id: str) -> ApiError:
    return ApiError(404, EVENT_NOT_FOUND, f"no event with external_job_id {external_job_id!r}")


_EVENT_ID = {"type": "string", "format": "uuid", "description": "The event's id."}
_EXTERNAL_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "The client's id for the job; it may hold '/'.",
}


_PATCH_DOC = (
    "Changes scheduled_at, destination, payload, http, max_retries, delivery_window_seconds "
    "and the retry backoff of a PENDING event atomically, checked as a submission is; the "
    "fields absent stay, null resets an optional one. 409 with the event when it is no longer "
    "PENDING (being delivered or finished); 412 with the event when if_version is given and "
    "the event is at another version. Each change bumps version and is listed in changes."
)


def event_operations(api: EventsApi) -> list[Operation]:
    """The operations, fixed paths before ``{event_id}`` so no fixed name is read as an id."""
    register_url_convertor("event_id", EventIdConvertor())
    register_url_convertor("external_id", ExternalIdConvertor())
    external = PREFIX + "/external/{external_job_id:external_id}"
    by_id = PREFIX + "/{event_id:event_id}"
    tag = "events"
    return [
        Operation(
            "POST", PREFIX, api.submit, "Submit an event", tag, Role.SUBMIT,
            status=202, data=AcceptedOut, body=EventBody,
            errors=(400, 403, 413, 415, 422, 429, 503),
            description="The event's id is derived from its (source, external_job_id, "
            "scheduled_at): a resubmission, or a retry after a 503 or a timeout, gets the same "
            "id and never makes a second event. A resubmission of a stored event answers "
            "duplicate: true with that event's status. 429 when the event's source is over its "
            "quota: its submission rate (QUOTA_RATE, with Retry-After) or its PENDING events "
            "(QUOTA_PENDING).",
        ),
        Operation(
            "GET", PREFIX, api.list_events, "List events, a page at a time", tag, Role.READ,
            data=EventPageOut, errors=(400, 503), query=QUERY_PARAMS,
            description="Ordered by (scheduled_at, id); pages follow with next_cursor "
            "(keyset pagination: no event is skipped or repeated). Only the events of the "
            "sources the key acts for: a source it doesn't act for lists nothing.",
        ),
        Operation(
            "POST", PREFIX + "/batch", api.submit_batch, "Submit a batch of events", tag,
            Role.SUBMIT, status=202, data=BatchOut, body=BatchBody,
            errors=(400, 403, 413, 415, 422, 429, 503),
            description="Each event is accepted or rejected on its own (rejected_events[].code "
            "says why: VALIDATION_FAILED, FORBIDDEN_SOURCE, QUOTA_RATE, QUOTA_PENDING); a "
            "source over its quota has its first events accepted and the rest rejected. 422 "
            "when none is accepted (data lists the rejections), 429 when none is because of "
            "quotas (with Retry-After for a rate); 403 when every event is for a source the "
            "key may not act for. Retry-After on a 202 says when events refused for a rate "
            "may be sent again.",
        ),
        Operation(
            "GET", PREFIX + "/statistics", api.statistics, "Count events per status", tag,
            Role.READ, data=dict[str, int], errors=(503,),
            description="Only the events of the sources the key may act for.",
        ),
        # "/all" is matched first, so only an external id that itself ends in "/all" can't be
        # looked up singly.
        Operation(
            "GET", external + "/all", api.all_by_external_id,
            "List the events of an external id", tag, Role.READ, data=list[EventOut],
            errors=(400, 404, 503), params={"external_job_id": _EXTERNAL_ID},
            query=by_external.PAGE_PARAMS, headers={"Link": by_external.LINK_HEADER},
            description="Newest first, a page at a time: a Link header (rel=next) names the "
            "next page while there is one, within the newest "
            f"{by_external.MAX_DEPTH} events of the external id. Every source the key acts "
            "for, unless source narrows it.",
        ),
        Operation(
            "GET", external, api.latest_by_external_id,
            "Read the latest event of an external id", tag, Role.READ, data=EventOut,
            errors=(400, 404, 503), params={"external_job_id": _EXTERNAL_ID},
            query={"source": by_external.SOURCE_PARAM},
            description="The most recently created, among every source the key acts for "
            "unless source narrows it.",
        ),
        Operation(
            "DELETE", external, api.cancel_by_external_id,
            "Cancel the pending events of an external id", tag, Role.CANCEL, data=Cancelled,
            errors=(400, 404, 503), params={"external_job_id": _EXTERNAL_ID},
            query={"source": by_external.SOURCE_PARAM},
            description="Every PENDING event with this external id, in every source the key "
            "acts for unless source narrows it.",
        ),
        Operation(
            "PATCH", external, api.amend_by_external_id,
            "Change the latest pending event of an external id", tag, Role.SUBMIT,
            data=EventOut, body=EventPatchIn, errors=(400, 404, 409, 412, 413, 415, 422, 503),
            params={"external_job_id": _EXTERNAL_ID},
            query={"source": by_external.SOURCE_PARAM},
            description=_PATCH_DOC + " Applies to the most recent PENDING event of the "
            "external id (with none, the answer is 409 naming the latest event's status), "
            "among every source the key acts for unless source narrows it.",
        ),
        Operation(
            "GET", by_id, api.get, "Read an event", tag, Role.READ, data=EventOut,
            errors=(400, 404, 503), params={"event_id": _EVENT_ID},
        ),
        Operation(
            "DELETE", by_id, api.cancel, "Cancel a pending event", tag, Role.CANCEL,
            data=EventOut, errors=(400, 404, 409, 503),
            params={"event_id": _EVENT_ID},
        ),
        Operation(
            "PATCH", by_id, api.amend, "Change a pending event", tag, Role.SUBMIT,
            data=EventOut, body=EventPatchIn, errors=(400, 404, 409, 412, 413, 415, 422, 503),
            params={"event_id": _EVENT_ID}, description=_PATCH_DOC,
        ),
        Operation(
            "GET", by_id + "/attempts", api.attempts, "List an event's delivery attempts", tag,
            Role.READ, data=list[AttemptOut], errors=(400, 404, 503),
            params={"event_id": _EVENT_ID}, description="Oldest first.",
        ),
        Operation(
            "POST", by_id + "/redeliver", api.redeliver, "Deliver a finished event again", tag,
            Role.SUBMIT, data=EventOut, errors=(400, 404, 409, 503),
            params={"event_id": _EVENT_ID},
            description="A COMPLETED, FAILED or DEAD_LETTER event becomes PENDING, due now, "
            "with its retries afresh; its attempt history is kept. Needs the submit role: it "
            "sends the event again.",
        ),
    ]  # fmt: skip
