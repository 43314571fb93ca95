"""The /api/v1/events/admin operations: bulk redelivery, retention now, destinations, and the
ingest records the Kafka consumer refused.

Everything under the admin prefix needs the admin role, whatever its operation declares
(:class:`~timefuse.entrypoints.api.access.Authenticate`); each operation declares it too.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from timefuse.domain.quota import ANY_SOURCE, SourceQuota
from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.access import principal
from timefuse.entrypoints.api.body import BodyLimits, read_json
from timefuse.entrypoints.api.envelope import ok
from timefuse.entrypoints.api.errors import (
    DESTINATION_NOT_FOUND,
    NO_KAFKA_INGEST,
    QUOTA_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    ApiError,
)
from timefuse.entrypoints.api.listing import (
    check_window,
    instant_param,
    int_param,
    invalid,
    source_param,
)
from timefuse.entrypoints.api.models import (
    CleanedUp,
    DeliveryTypeOut,
    DestinationOut,
    QuotaIn,
    QuotaOut,
    Redelivered,
    RedeliverIn,
    RefusedRecordOut,
    SharedBreakerOut,
    WorkerOut,
)
from timefuse.entrypoints.api.operations import Operation
from timefuse.entrypoints.api.refused import (
    DEFAULT_REFUSED,
    MAX_REFUSED,
    RefusedRecords,
    refused_rows,
)
from timefuse.entrypoints.auth import Role
from timefuse.ports.ingest import StreamUnavailable
from timefuse.service.admin import Admin
from timefuse.service.events import EventService
from timefuse.service.quotas import QuotaUsage, SourceQuotas

log = structlog.get_logger("timefuse.api")

MAX_CLEANUP_DAYS = 36_500

_redeliver_decoder = msgspec.json.Decoder(RedeliverIn)
_quota_decoder = msgspec.json.Decoder(QuotaIn)


class AdminApi:
    """:param admin: retention and destinations; without it the app has no such operations.
    :param refused: the Kafka dead letter topic; ``None`` without Kafka.
    """

    def __init__(
        self,
        service: EventService,
        admin: Admin | None,
        limits: BodyLimits,
        refused: RefusedRecords | None = None,
    ) -> None:
        self._service = service
        self._admin = admin
        self._limits = limits
        self._refused = refused

    async def redeliver_dead_letters(self, request: Request) -> Response:
        body = await read_json(request, _redeliver_decoder, self._limits)
        errors: list[FieldError] = []
        if body.source is not None:
            source_param(body.source, errors)
        scheduled_from = instant_param("scheduled_from", body.scheduled_from, errors)
        scheduled_to = instant_param("scheduled_to", body.scheduled_to, errors)
        check_window(scheduled_from, scheduled_to, errors)
        if errors:
            raise invalid(errors, "request")
        caller = principal(request)
        count = await self._service.redeliver_dead_letters(
            source=body.source,
            scheduled_from=scheduled_from,
            scheduled_to=scheduled_to,
            limit=body.limit,
            sources=caller.sources,
        )
        # Operators' bulk actions are worth a trace of who did what.
        log.info("dead letters redelivered", count=count, source=body.source, key=caller.name)
        return ok(Redelivered(count), message=f"{count} events redelivered")

    async def quotas(self, request: Request) -> Response:
        source = request.query_params.get("source")
        if source is not None:
            errors: list[FieldError] = []
            source = source_param(source, errors)
            if errors:
                raise invalid(errors)
        quotas = self._service.quotas
        if quotas is None:
            return ok([])
        rows = await quotas.usage(None if source is None else [source])
        return ok([_quota_out(row) for row in rows])

    async def set_quota(self, request: Request) -> Response:
        source = _quota_name(request)
        body = await read_json(request, _quota_decoder, self._limits)
        try:
            quota = SourceQuota(rate=body.rate, burst=body.burst, max_pending=body.max_pending)
        except ValueError as exc:
            # The one rule msgspec's bounds can't say: a burst needs a rate.
            raise invalid([FieldError("burst", str(exc))], "request") from None
        quotas = self._quotas()
        quotas.set_entry(source, quota)
        log.info(
            "source quota set",
            source=source,
            quota=msgspec.structs.asdict(body),
            key=principal(request).name,
        )
        (row,) = await quotas.usage([source])
        return ok(_quota_out(row), message="quota set in this process")

    async def remove_quota(self, request: Request) -> Response:
        source = _quota_name(request)
        quotas = self._quotas()
        if not quotas.set_entry(source, None):
            message = f"this process has no quota entry {source[:100]!r}"
            raise ApiError(404, QUOTA_NOT_FOUND, message)
        log.info("source quota removed", source=source, key=principal(request).name)
        (row,) = await quotas.usage([source])
        return ok(_quota_out(row), message="quota removed in this process")

    def _quotas(self) -> SourceQuotas:
        quotas = self._service.quotas
        if quotas is None:
            raise ApiError(503, SERVICE_UNAVAILABLE, "this process enforces no quotas")
        return quotas

    async def cleanup(self, request: Request) -> Response:
        errors: list[FieldError] = []
        days = int_param("days", request.query_params.get("days"), 0, MAX_CLEANUP_DAYS, errors)
        if errors:
            raise invalid(errors)
        admin = self._facade()
        days = admin.retention_days if days is None else days
        deleted = await admin.cleanup(days)
        log.info(
            "retention run on request", deleted=deleted, days=days, key=principal(request).name
        )
        return ok(CleanedUp(deleted, days), message=f"{deleted} events deleted")

    async def destinations(self, request: Request) -> Response:
        states = self._facade().destinations()
        return ok([_destination_out(key, state) for key, state in states.items()])

    async def reset_destination(self, request: Request) -> Response:
        key: str = request.path_params["key"]
        state = self._facade().reset_destination(key)
        if state is None:
            message = f"this process's dispatcher knows no destination {key[:200]!r}"
            raise ApiError(404, DESTINATION_NOT_FOUND, message)
        log.info("circuit breaker reset", destination=key, key=principal(request).name)
        return ok(_destination_out(key, state), message="circuit breaker reset")

    async def shared_breakers(self, request: Request) -> Response:
        breakers = await self._facade().shared_breakers()
        return ok([SharedBreakerOut(b.key, round(b.open_seconds, 3), b.probe_by) for b in breakers])

    async def close_shared_breaker(self, request: Request) -> Response:
        key: str = request.path_params["key"]
        if not await self._facade().close_shared_breaker(key):
            message = f"no circuit breaker {key[:200]!r} is open for the cluster"
            raise ApiError(404, DESTINATION_NOT_FOUND, message)
        log.info("shared circuit breaker closed", breaker=key, key=principal(request).name)
        return ok(None, message="circuit breaker closed for every process")

    async def workers(self, request: Request) -> Response:
        rows = await self._facade().workers()
        return ok(
            [
                WorkerOut(
                    worker=w.worker,
                    roles=list(w.roles),
                    started_at=w.started_at,
                    last_seen=w.last_seen,
                    silent_seconds=round(w.silent_seconds, 3),
                    in_flight=w.in_flight,
                    alive=alive,
                )
                for w, alive in rows
            ]
        )

    async def refused_records(self, request: Request) -> Response:
        errors: list[FieldError] = []
        limit = int_param("limit", request.query_params.get("limit"), 1, MAX_REFUSED, errors)
        if errors:
            raise invalid(errors)
        if self._refused is None:
            raise ApiError(
                404,
                NO_KAFKA_INGEST,
                "this timefuse has no Kafka ingest topic (KAFKA_BOOTSTRAP_SERVERS is unset), "
                "so no ingest record is ever refused",
            )
        try:
            rows = await refused_rows(self._refused, limit or DEFAULT_REFUSED)
        except StreamUnavailable as exc:
            raise ApiError(503, SERVICE_UNAVAILABLE, str(exc)) from exc
        return ok(rows, message=f"{len(rows)} records of {self._refused.topic}")

    async def delivery_types(self, request: Request) -> Response:
        rows = await self._facade().delivery_types()
        return ok([msgspec.convert(row, DeliveryTypeOut) for row in rows])

    @property
    def has_facade(self) -> bool:
        return self._admin is not None

    def _facade(self) -> Admin:
        # Only operations admin_operations adds when there is a facade call this.
        assert self._admin is not None
        return self._admin


def _quota_name(request: Request) -> str:
    source: str = request.path_params["source"]
    if source != ANY_SOURCE:
        errors: list[FieldError] = []
        source_param(source, errors)
        if errors:
            raise invalid(errors)
    return source


def _quota_out(usage: QuotaUsage) -> QuotaOut:
    quota = usage.quota
    return QuotaOut(
        source=usage.source,
        entry=usage.entry,
        rate=None if quota is None else quota.rate,
        burst=None if quota is None or quota.rate is None else quota.bucket_size,
        max_pending=None if quota is None else quota.max_pending,
        pending=usage.pending,
        tokens=None if usage.tokens is None else round(usage.tokens, 3),
        rejected=usage.rejected,
    )


def _destination_out(key: str, state: Mapping[str, object]) -> DestinationOut:
    return msgspec.convert({**state, "key": key}, DestinationOut)


_DAYS = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_CLEANUP_DAYS,
    "description": "Keep terminal events updated within this many days (default: "
    "CLEANUP_RETENTION_DAYS).",
}
_SOURCE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "description": "A source: its quota and use.",
}
_LIMIT = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_REFUSED,
    "description": f"How many records, at most (default {DEFAULT_REFUSED}).",
}
_KEY = {
    "type": "string",
    "minLength": 1,
    "description": "A destination's key as listed (host:port, or delivery type:topic).",
}


def admin_operations(api: AdminApi, prefix: str) -> list[Operation]:
    """Bulk redelivery; with a facade, retention and destinations too."""
    tag = "admin"
    redeliver = Operation(
        "POST", prefix + "/redeliver", api.redeliver_dead_letters,
        "Redeliver DEAD_LETTER events", tag, Role.ADMIN, data=Redelivered, body=RedeliverIn,
        errors=(400, 413, 415, 503),
        description="Up to limit (default 10000) DEAD_LETTER events, earliest scheduled first, "
        "become PENDING and due now, in one transaction; send {} for any source and time. "
        "Call again while it answers limit.",
    )  # fmt: skip
    quotas = Operation(
        "GET", prefix + "/quotas", api.quotas, "Quotas per source and their use", tag,
        Role.ADMIN, data=list[QuotaOut], errors=(400, 503), query={"source": _SOURCE},
        description="Without source: every entry of TIMEFUSE_SOURCE_QUOTAS (* included). With "
        "source: that source, under the entry that holds for it (null: unlimited). pending is "
        "the store's count; tokens and rejected are this process's.",
    )  # fmt: skip
    quota = {
        "source": {
            **_SOURCE,
            "description": "A source, or * for every source without an entry of its own.",
        }
    }
    changes = [
        Operation(
            "PUT", prefix + "/quotas/{source:path}", api.set_quota, "Set a source's quota", tag,
            Role.ADMIN, data=QuotaOut, body=QuotaIn, errors=(400, 404, 413, 415, 503),
            params=quota,
            description="In the process answering only, until it restarts (then "
            "TIMEFUSE_SOURCE_QUOTAS holds again): set it in the configuration to keep it, and "
            "call every API process to apply it now. The source's bucket keeps its tokens.",
        ),
        Operation(
            "DELETE", prefix + "/quotas/{source:path}", api.remove_quota,
            "Remove a source's quota entry", tag, Role.ADMIN, data=QuotaOut,
            errors=(400, 404, 503), params=quota,
            description="In the process answering only, until it restarts. The source falls "
            "under * again (or is unlimited); 404 QUOTA_NOT_FOUND without such an entry.",
        ),
    ]  # fmt: skip
    refused = Operation(
        "GET", prefix + "/ingest/dead-letters", api.refused_records,
        "Ingest records the Kafka consumer refused", tag, Role.ADMIN,
        data=list[RefusedRecordOut], errors=(400, 404, 503), query={"limit": _LIMIT},
        description="The newest records of the dead letter topic (<ingest topic>.dlq), newest "
        "first, each with the reason the ingest consumer gave (its timefuse-error header). "
        "404 when Kafka is not configured.",
    )  # fmt: skip
    if not api.has_facade:
        return [redeliver, quotas, *changes, refused]
    return [
        redeliver,
        quotas,
        *changes,
        refused,
        Operation(
            "POST", prefix + "/cleanup", api.cleanup, "Run retention now", tag, Role.ADMIN,
            data=CleanedUp, errors=(400, 503), query={"days": _DAYS},
            description="Deletes COMPLETED, FAILED, DEAD_LETTER and CANCELLED events last "
            "updated more than days ago; never a PENDING or PROCESSING one.",
        ),
        Operation(
            "GET", prefix + "/destinations", api.destinations,
            "This process's destinations", tag, Role.ADMIN, data=list[DestinationOut],
            description="Breaker, caps and queues are kept per dispatching process: this lists "
            "the destinations of the process answering (none in a process that doesn't "
            "dispatch).",
        ),
        Operation(
            "GET", prefix + "/workers", api.workers, "The processes heard of", tag, Role.ADMIN,
            data=list[WorkerOut], errors=(503,),
            description="Every process heartbeats about once a second; one silent for longer "
            "than a few seconds is dead, and its claimed events go back to PENDING at once.",
        ),
        Operation(
            "GET", prefix + "/delivery-types", api.delivery_types,
            "Delivery types and their due events", tag, Role.ADMIN,
            data=list[DeliveryTypeOut], errors=(503,),
            description="The types the process answering delivers, and any type that due "
            "events name but this process lacks (after a rolling deploy adds a plugin, say): "
            "those events wait, unclaimed and uncounted, for a process that has it.",
        ),
        Operation(
            "POST", prefix + "/destinations/{key:path}/reset", api.reset_destination,
            "Close a destination's circuit breaker", tag, Role.ADMIN, data=DestinationOut,
            errors=(404,), params={"key": _KEY},
            description="In the process answering only (see the list of destinations).",
        ),
        Operation(
            "GET", prefix + "/breakers", api.shared_breakers,
            "Circuit breakers open for the cluster", tag, Role.ADMIN,
            data=list[SharedBreakerOut], errors=(503,),
            description="With PostgreSQL, dispatchers share their breakers through the store: "
            "one opened by any process holds every process within about half a second, and "
            "after the cool-down one delivery in the cluster probes. Empty with SQLite (one "
            "process: see destinations).",
        ),
        Operation(
            "POST", prefix + "/breakers/{key:path}/close", api.close_shared_breaker,
            "Close a circuit breaker for the cluster", tag, Role.ADMIN,
            errors=(404, 503), params={"key": _KEY},
            description="Every process stops following it at its next look (about half a "
            "second); a dispatcher that opened it itself keeps its own until its probe or a "
            "reset through its destinations endpoint.",
        ),
    ]  # fmt: skip
