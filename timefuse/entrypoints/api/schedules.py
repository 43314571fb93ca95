"""The /api/v1/schedules operations: thin handlers over :class:`ScheduleService`.

A schedule's fields that break a rule answer 422 naming each (an invalid cron, an unknown
time zone, end_at before start_at, an interval under one second, an event field that a
submission couldn't have); malformed JSON and bad query parameters answer 400, as the events
API does. A key scoped to sources sees and changes only its sources' schedules: another
source's schedule answers 404.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from timefuse.domain.cursor import Cursor
from timefuse.domain.schedule import ScheduleState
from timefuse.domain.validation import FieldError, ValidationFailed
from timefuse.entrypoints.api.access import FORBIDDEN_SOURCE, principal
from timefuse.entrypoints.api.body import BodyLimits, decode_json, is_json_media_type, read_body
from timefuse.entrypoints.api.envelope import FieldErrorOut, ok
from timefuse.entrypoints.api.errors import (
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ApiError,
)
from timefuse.entrypoints.api.listing import (
    cursor_param,
    enum_param,
    int_param,
    invalid,
    source_param,
)
from timefuse.entrypoints.api.models import (
    NOT_A_SCALAR,
    EventOut,
    RawFields,
    event_out,
    read_event,
    unknown_field_message,
)
from timefuse.entrypoints.api.operations import Operation
from timefuse.entrypoints.api.schedule_models import (
    OccurrencePageOut,
    ScheduleBody,
    ScheduleDeleted,
    ScheduleIn,
    ScheduleOut,
    SchedulePageOut,
    SchedulePatchIn,
    ScheduleWrittenOut,
    schedule_out,
    schedule_written_out,
)
from timefuse.entrypoints.auth import Role
from timefuse.ports.store import SchedulePosition, ScheduleQuery
from timefuse.service.schedules import (
    NOT_AN_OBJECT,
    ForbiddenSource,
    ScheduleBusy,
    ScheduleService,
)

PREFIX = "/api/v1/schedules"
INVALID_SCHEDULE_ID = "INVALID_SCHEDULE_ID"
SCHEDULE_NOT_FOUND = "SCHEDULE_NOT_FOUND"
SCHEDULE_BUSY = "SCHEDULE_BUSY"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_NEXT_RUNS = 5
MAX_NEXT_RUNS = 100
_MAX_SOURCE = 100

T = TypeVar("T")

_schedule_decoder = msgspec.json.Decoder(ScheduleIn)
_patch_decoder = msgspec.json.Decoder(SchedulePatchIn)
_fields_decoder = msgspec.json.Decoder(RawFields)
# Fields of a declaration that a PATCH can't hold.
_FIXED = ("key", "source")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>.+)`$")


def scalar(raw: msgspec.Raw) -> object:
    """A field's JSON value when it is a scalar (``None`` when absent or null)."""
    if not raw:
        return None
    text = bytes(raw)
    if text[:1] in (b"[", b"{"):
        return NOT_A_SCALAR
    try:
        return msgspec.json.decode(text)
    except msgspec.ValidationError:
        return NOT_A_SCALAR


def template_of(raw: msgspec.Raw) -> tuple[object, list[str]]:
    """The ``event`` field as submission fields (``None`` when absent or null), and the names
    of its fields no event has."""
    text = bytes(raw) if raw else b""
    if not text or text == b"null":
        return None, []
    if text[:1] != b"{":
        return NOT_AN_OBJECT, []
    event, unknown = read_event(_fields_decoder.decode(text))
    return event.to_fields(), unknown


def _unknown_in_template(names: list[str], *, reject: bool) -> list[FieldErrorOut]:
    """The template's unknown fields as warnings; with ``reject``, a 422 naming them."""
    warnings = [FieldErrorOut(f"event.{name}", unknown_field_message(name)) for name in names]
    if warnings and reject:
        raise _unprocessable([FieldError(w.field, w.message) for w in warnings])
    return warnings


def _unprocessable(errors: list[FieldError]) -> ApiError:
    named = "; ".join(f"{error.field}: {error.message}" for error in errors)
    return ApiError(422, VALIDATION_FAILED, f"invalid schedule: {named}", errors=errors)


async def _read(request: Request, decoder: msgspec.json.Decoder[T], limits: BodyLimits) -> T:
    if not is_json_media_type(request.headers.get("content-type")):
        raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    body = await read_body(request, limits.max_bytes)
    try:
        return decode_json(body, decoder, limits.max_depth)
    except ApiError as exc:
        if exc.error_code != VALIDATION_FAILED:
            raise
        errors = []
        for error in exc.errors or []:
            unknown = _UNKNOWN_FIELD.match(error.message)
            if unknown is not None:
                name = unknown["name"]
                why = "can't be changed" if name in _FIXED else "is not a field of a schedule"
                errors.append(FieldError(name, why))
            else:
                errors.append(error)
        raise _unprocessable(errors) from None


class SchedulesApi:
    def __init__(
        self, service: ScheduleService, limits: BodyLimits, *, reject_unknown: bool = False
    ) -> None:
        """:param reject_unknown: an unknown field of an event template is refused (422),
        not ignored with a warning (TIMEFUSE_UNKNOWN_FIELDS)."""
        self._service = service
        self._limits = limits
        self._reject_unknown = reject_unknown

    async def declare(self, request: Request) -> Response:
        body = await _read(request, _schedule_decoder, self._limits)
        fields = {
            name: scalar(getattr(body, name))
            for name in ScheduleIn.__struct_fields__
            if name != "event"
        }
        event, unknown = template_of(body.event)
        warnings = _unknown_in_template(unknown, reject=self._reject_unknown)
        try:
            declared = await self._service.declare(
                fields, event, sources=principal(request).sources
            )
        except ForbiddenSource as exc:
            error = FieldError("source", str(exc))
            raise ApiError(403, FORBIDDEN_SOURCE, str(exc), errors=[error]) from None
        except ValidationFailed as exc:
            raise _unprocessable(exc.errors) from None
        except ScheduleBusy as exc:
            raise ApiError(409, SCHEDULE_BUSY, str(exc)) from None
        record = declared.record
        if declared.created:
            message, status = "schedule created", 201
        else:
            message = "schedule updated" if declared.changed else "schedule unchanged"
            status = 200
        return ok(
            schedule_written_out(record, warnings),
            status,
            message=message,
            headers={"Location": f"{PREFIX}/{record.id}"},
        )

    async def list_schedules(self, request: Request) -> Response:
        params = request.query_params
        errors: list[FieldError] = []
        source = params.get("source")
        if source is not None:
            source_param(source, errors)
        state = enum_param("state", params.get("state"), ScheduleState, errors)
        limit = int_param("limit", params.get("limit"), 1, MAX_LIMIT, errors)
        after = cursor_param(params.get("cursor"), SchedulePosition.decode, errors)
        if errors:
            raise invalid(errors)
        query = ScheduleQuery(sources=None if source is None else frozenset({source}), state=state)
        page = await self._service.list(
            query, limit or DEFAULT_LIMIT, after, sources=principal(request).sources
        )
        cursor = None if page.next_after is None else page.next_after.encode()
        return ok(SchedulePageOut([schedule_out(r) for r in page.schedules], cursor))

    async def get(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        errors: list[FieldError] = []
        count = int_param("count", request.query_params.get("count"), 0, MAX_NEXT_RUNS, errors)
        if errors:
            raise invalid(errors)
        record = await self._service.get(schedule_id, sources=principal(request).sources)
        if record is None:
            raise _not_found(schedule_id)
        runs = self._service.next_runs(record, DEFAULT_NEXT_RUNS if count is None else count)
        return ok(schedule_out(record, runs))

    async def update(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        body = await _read(request, _patch_decoder, self._limits)
        changes = {
            name: scalar(getattr(body, name))
            for name in SchedulePatchIn.__struct_fields__
            if name != "event" and getattr(body, name)
        }
        event, unknown = template_of(body.event) if body.event else (None, [])
        if body.event and event is None:
            raise _unprocessable([FieldError("event", "can't be cleared: give a new event")])
        warnings = _unknown_in_template(unknown, reject=self._reject_unknown)
        try:
            record = await self._service.update(
                schedule_id, changes, event, sources=principal(request).sources
            )
        except ValidationFailed as exc:
            raise _unprocessable(exc.errors) from None
        except ScheduleBusy as exc:
            raise ApiError(409, SCHEDULE_BUSY, str(exc)) from None
        if record is None:
            raise _not_found(schedule_id)
        return ok(schedule_written_out(record, warnings), message="schedule updated")

    async def delete(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        if not await self._service.delete(schedule_id, sources=principal(request).sources):
            raise _not_found(schedule_id)
        return ok(ScheduleDeleted(schedule_id, True), message="schedule deleted")

    async def pause(self, request: Request) -> Response:
        return await self._change(request, paused=True)

    async def resume(self, request: Request) -> Response:
        return await self._change(request, paused=False)

    async def _change(self, request: Request, *, paused: bool) -> Response:
        schedule_id = _schedule_id(request)
        sources = principal(request).sources
        change = self._service.pause if paused else self._service.resume
        try:
            record = await change(schedule_id, sources=sources)
        except ScheduleBusy as exc:
            raise ApiError(409, SCHEDULE_BUSY, str(exc)) from None
        if record is None:
            raise _not_found(schedule_id)
        return ok(schedule_out(record), message="schedule paused" if paused else "resumed")

    async def trigger(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        try:
            event = await self._service.trigger(schedule_id, sources=principal(request).sources)
        except ValidationFailed as exc:
            raise _unprocessable(exc.errors) from None
        if event is None:
            raise _not_found(schedule_id)
        return ok(
            event_out(event),
            202,
            message="occurrence created",
            headers={"Location": f"/api/v1/events/{event.id}"},
        )

    async def occurrences(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        params = request.query_params
        errors: list[FieldError] = []
        limit = int_param("limit", params.get("limit"), 1, MAX_LIMIT, errors)
        before = cursor_param(params.get("cursor"), Cursor.decode, errors)
        if errors:
            raise invalid(errors)
        page = await self._service.occurrences(
            schedule_id, limit or DEFAULT_LIMIT, before, sources=principal(request).sources
        )
        if page is None:
            raise _not_found(schedule_id)
        cursor = None if page.next_cursor is None else page.next_cursor.encode()
        return ok(OccurrencePageOut([event_out(event) for event in page.events], cursor))


def _schedule_id(request: Request) -> str:
    raw: str = request.path_params["schedule_id"]
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        parsed = None
    if parsed is None or len(raw) != 36:
        raise ApiError(400, INVALID_SCHEDULE_ID, f"{raw[:80]!r} is not a schedule id (a UUID)")
    return str(parsed)


def _not_found(schedule_id: str) -> ApiError:
    return ApiError(404, SCHEDULE_NOT_FOUND, f"no schedule with id {schedule_id}")


_SCHEDULE_ID = {"type": "string", "format": "uuid", "description": "The schedule's id."}
_PAGE: dict[str, Mapping[str, Any]] = {
    "limit": {
        "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
        "description": "Items per page.",
    },
    "cursor": {"type": "string", "description": "The next_cursor of the previous page."},
}  # fmt: skip
_LIST_QUERY: dict[str, Mapping[str, Any]] = {
    "source": {
        "type": "string", "minLength": 1, "maxLength": _MAX_SOURCE,
        "description": "Only this source's (none, for a source the key doesn't act for).",
    },
    "state": {
        "type": "string", "enum": [state.value for state in ScheduleState],
        "description": "Only schedules in this state.",
    },
    **_PAGE,
}  # fmt: skip
_COUNT: dict[str, Mapping[str, Any]] = {
    "count": {
        "type": "integer", "minimum": 0, "maximum": MAX_NEXT_RUNS, "default": DEFAULT_NEXT_RUNS,
        "description": "How many next instants to list in next_runs.",
    }
}  # fmt: skip
_WRITE_ERRORS = (400, 404, 409, 413, 415, 422, 503)


def schedule_operations(api: SchedulesApi) -> list[Operation]:
    by_id = PREFIX + "/{schedule_id}"
    tag = "schedules"
    params = {"schedule_id": _SCHEDULE_ID}
    return [
        Operation(
            "POST", PREFIX, api.declare, "Declare a schedule (create, or replace by key)", tag,
            Role.SUBMIT, status=201, also=(200,), data=ScheduleWrittenOut, body=ScheduleBody,
            errors=(400, 403, 409, 413, 415, 422, 503),
            description="201 when the key is new for the source, 200 when it replaces the "
            "schedule declared before (fields left out take their defaults; a pause stays "
            "unless paused is given). 422 names every bad field, the event template's as "
            "event.<field>.",
        ),
        Operation(
            "GET", PREFIX, api.list_schedules, "List schedules, a page at a time", tag,
            Role.READ, data=SchedulePageOut, errors=(400, 503), query=_LIST_QUERY,
            description="In (source, key) order; only the schedules of the sources the key "
            "acts for.",
        ),
        Operation(
            "GET", by_id, api.get, "Read a schedule and its next instants", tag, Role.READ,
            data=ScheduleOut, errors=(400, 404, 503), params=params, query=_COUNT,
        ),
        Operation(
            "PATCH", by_id, api.update, "Change a schedule", tag, Role.SUBMIT,
            data=ScheduleWrittenOut, body=SchedulePatchIn, errors=_WRITE_ERRORS, params=params,
        ),
        Operation(
            "DELETE", by_id, api.delete, "Delete a schedule", tag, Role.CANCEL,
            data=ScheduleDeleted, errors=(400, 404, 503), params=params,
            description="Its occurrences already created stay: they are events.",
        ),
        Operation(
            "POST", by_id + "/pause", api.pause, "Pause a schedule", tag, Role.SUBMIT,
            data=ScheduleOut, errors=(400, 404, 409, 503), params=params,
        ),
        Operation(
            "POST", by_id + "/resume", api.resume, "Resume a schedule", tag, Role.SUBMIT,
            data=ScheduleOut, errors=(400, 404, 409, 503), params=params,
            description="Instants that passed while paused follow its missed_runs policy.",
        ),
        Operation(
            "POST", by_id + "/trigger", api.trigger, "Run a schedule once now", tag,
            Role.SUBMIT, status=202, data=EventOut, errors=(400, 404, 422, 503),
            params=params,
            description="One extra occurrence, due now; not counted against the schedule "
            "(runs, max_runs) and moving none of its instants.",
        ),
        Operation(
            "GET", by_id + "/events", api.occurrences, "List a schedule's occurrences", tag,
            Role.READ, data=OccurrencePageOut, errors=(400, 404, 503), params=params,
            query=_PAGE, description="Newest first, with their statuses.",
        ),
    ]  # fmt: skip
