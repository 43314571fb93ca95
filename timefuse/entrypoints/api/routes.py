"""The /api/v1/events routes: thin handlers over :class:`EventService`."""

from __future__ import annotations

import uuid

import msgspec
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from timefuse.domain.event import is_event_id
from timefuse.entrypoints.api import batch
from timefuse.entrypoints.api.body import read_json
from timefuse.entrypoints.api.envelope import ok
from timefuse.entrypoints.api.errors import (
    EVENT_NOT_FOUND,
    EVENT_NOT_PENDING,
    INVALID_EVENT_ID,
    ApiError,
)
from timefuse.entrypoints.api.models import (
    BatchIn,
    Cancelled,
    EventIn,
    Submitted,
    event_out,
)
from timefuse.ports.store import CancelResult
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics

PREFIX = "/api/v1/events"

_event_decoder = msgspec.json.Decoder(EventIn)
_batch_decoder = msgspec.json.Decoder(BatchIn)


class EventIdConvertor(Convertor[str]):
    """Any one path segment except the fixed names beside ``{id}``.

    ``GET /api/v1/events/batch`` must answer 405 (the path exists, for POST), not reach the
    event lookup as an id and answer 400; excluding the fixed names here lets Starlette's
    router see that the path exists with other methods.
    """

    regex = "(?!(?:batch|statistics|health|external)$)[^/]+"

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
    def __init__(self, service: EventService, metrics: Metrics, max_body_bytes: int) -> None:
        self._service = service
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    async def submit(self, request: Request) -> Response:
        body = await read_json(request, _event_decoder, self._max_body_bytes)
        event_id = await self._service.submit(body.to_fields())
        return ok(
            Submitted(event_id, "PENDING"),
            202,
            message="event accepted",
            headers={"Location": f"{PREFIX}/{event_id}"},
        )

    async def submit_batch(self, request: Request) -> Response:
        """Accept the valid events of a batch: 202 if any went through, else 400.

        See :func:`timefuse.entrypoints.api.batch.all_rejected` for the all-rejected answer.
        """
        body = await read_json(request, _batch_decoder, self._max_body_bytes)
        items = batch.check_size(body.events)
        out = await batch.submit_items(self._service, self._metrics, items)
        if not out.accepted:
            raise batch.all_rejected(out)
        message = f"{out.accepted} accepted, {out.rejected} rejected"
        return ok(out, 202, message=message)

    # One route per path with both methods, so a wrong method's 405 lists both in Allow.
    async def by_id(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.cancel(request)
        return await self.get(request)

    async def by_external_id(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.cancel_by_external_id(request)
        return await self.latest_by_external_id(request)

    async def get(self, request: Request) -> Response:
        event_id = _event_id(request)
        event = await self._service.get(event_id)
        if event is None:
            raise _not_found(event_id)
        return ok(event_out(event))

    async def cancel(self, request: Request) -> Response:
        event_id = _event_id(request)
        result = await self._service.cancel(event_id)
        if result is CancelResult.NOT_FOUND:
            raise _not_found(event_id)
        # Read back for the answer; the event may have moved on (or been purged) meanwhile.
        event = await self._service.get(event_id)
        if result is CancelResult.NOT_PENDING:
            status = event.status.value if event is not None else "no longer PENDING"
            message = f"event {event_id} is {status}; only a PENDING event can be cancelled"
            raise ApiError(409, EVENT_NOT_PENDING, message)
        data = event_out(event) if event is not None else Submitted(event_id, "CANCELLED")
        return ok(data, message="event cancelled")

    async def latest_by_external_id(self, request: Request) -> Response:
        external_job_id = request.path_params["external_job_id"]
        events = await self._service.find_by_external_id(external_job_id)
        if not events:
            raise _no_external(external_job_id)
        # The store lists the most recently created first.
        return ok(event_out(events[0]))

    async def all_by_external_id(self, request: Request) -> Response:
        external_job_id = request.path_params["external_job_id"]
        events = await self._service.find_by_external_id(external_job_id)
        return ok([event_out(event) for event in events])

    async def cancel_by_external_id(self, request: Request) -> Response:
        external_job_id = request.path_params["external_job_id"]
        count = await self._service.cancel_by_external_id(external_job_id)
        # Nothing cancelled: 404 only if no event has that id at all; events that exist but
        # are past PENDING are an answer ("none left to cancel"), not a missing resource.
        if count == 0 and not await self._service.find_by_external_id(external_job_id):
            raise _no_external(external_job_id)
        return ok(Cancelled(count), message=f"{count} events cancelled")

    async def statistics(self, request: Request) -> Response:
        return ok(await self._service.statistics())


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


def event_routes(api: EventsApi) -> list[Route]:
    """The routes, fixed paths before ``{event_id}`` so no fixed name is read as an id."""
    register_url_convertor("event_id", EventIdConvertor())
    register_url_convertor("external_id", ExternalIdConvertor())
    external = PREFIX + "/external/{external_job_id:external_id}"
    return [
        Route(PREFIX, api.submit, methods=["POST"]),
        Route(PREFIX + "/batch", api.submit_batch, methods=["POST"]),
        Route(PREFIX + "/statistics", api.statistics, methods=["GET"]),
        # "/all" is matched first, so only an external id that itself ends in "/all" can't be
        # looked up singly.
        Route(external + "/all", api.all_by_external_id, methods=["GET"]),
        Route(external, api.by_external_id, methods=["GET", "DELETE"]),
        Route(PREFIX + "/{event_id:event_id}", api.by_id, methods=["GET", "DELETE"]),
    ]
