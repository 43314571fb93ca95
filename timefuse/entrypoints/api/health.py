"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from timefuse.entrypoints.api.access import Authenticate, principal
from timefuse.entrypoints.api.envelope import fail, ok
from timefuse.entrypoints.api.errors import EXCEPTION_HANDLERS, NOT_READY, CatchAll
from timefuse.entrypoints.api.operations import Operation, build_routes, public_paths
from timefuse.entrypoints.auth import KeyRing, Role
from timefuse.service.metrics import Metrics

log = structlog.get_logger("timefuse.api")

Readiness = Callable[[], Awaitable[dict[str, str]]]

# A probe that hangs is a failed probe: orchestrators time out at a few seconds anyway.
READINESS_TIMEOUT_SECONDS = 5.0


class HealthOut(msgspec.Struct, omit_defaults=True):
    """UP or DOWN; with readiness, what each part (store, buffer...) answered."""

    status: str
    checks: dict[str, str] | None = None


_UP = HealthOut("UP")


async def _up(request: Request) -> Response:
    return ok(_UP)


def _passing(state: str) -> bool:
    # "ok", or "ok, " and a detail worth showing (a replica's lag).
    return state == "ok" or state.startswith("ok, ")


class Health:
    def __init__(self, metrics: Metrics, readiness: Readiness | None) -> None:
        self._metrics = metrics
        self._readiness = readiness

    async def ready(self, request: Request) -> Response:
        """200 when every part answers "ok"; 503 naming each part that doesn't."""
        checks = await self._check()
        failing = {part: state for part, state in checks.items() if not _passing(state)}
        if failing:
            reasons = "; ".join(f"{part}: {state}" for part, state in failing.items())
            data = HealthOut("DOWN", checks)
            return fail(503, NOT_READY, f"not ready: {reasons}", data=data)
        return ok(HealthOut("UP", checks))

    async def _check(self) -> dict[str, str]:
        if self._readiness is None:
            return {}
        try:
            return await asyncio.wait_for(self._readiness(), READINESS_TIMEOUT_SECONDS)
        except TimeoutError:
            return {"readiness": f"no answer within {READINESS_TIMEOUT_SECONDS:g} s"}
        except Exception as exc:
            # The probe itself failing means not ready; it must not turn into a 500.
            log.warning("readiness check failed", error=repr(exc))
            return {"readiness": f"check failed: {exc!r}"}

    async def metrics(self, request: Request) -> Response:
        # Counters and gauges only: the per-status gauge is refreshed by a background task,
        # so a scrape never costs a COUNT(*) (a defect of the seed). Receivers are named only
        # to a caller that may see metrics, and only those of its sources.
        who = principal(request)
        sources = who.sources if who.has(Role.METRICS) else frozenset()
        body = await self._metrics.exposition(sources)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def health_operations(health: Health, events_prefix: str, *, metrics_auth: bool) -> list[Operation]:
    """Probes are public: orchestrators probe without keys. /metrics needs a key with the
    metrics (or admin) role, unless ``metrics_auth`` is off: then it is public, but shows
    the per-destination series only to such a key."""
    tag = "operations"
    up = "Liveness: the process answers"
    return [
        Operation("GET", "/health", _up, up, tag, public=True, data=HealthOut),
        Operation("GET", "/health/live", _up, up, tag, public=True, data=HealthOut),
        Operation(
            "GET", "/health/ready", health.ready, "Readiness: every part answers", tag,
            public=True, data=HealthOut, errors=(503,),
        ),
        Operation("GET", events_prefix + "/health", _up, up, tag, public=True, data=HealthOut),
        Operation(
            "GET", "/metrics", health.metrics, "Prometheus metrics", tag,
            role=Role.METRICS if metrics_auth else None, public=not metrics_auth,
            media_type=CONTENT_TYPE_LATEST.split(";")[0],
        ),
    ]  # fmt: skip


def health_app(
    health: Health,
    events_prefix: str,
    *,
    keys: KeyRing | None,
    metrics_auth: bool,
    trusted: bool = True,
) -> Starlette:
    """/health* and /metrics alone (the listener of processes without the API), with the
    API's rules: with ``keys``, /metrics as :func:`health_operations` says; without, every
    caller is trusted, unless ``trusted`` is false: then every caller is anonymous (sees no
    per-destination series)."""
    operations = health_operations(health, events_prefix, metrics_auth=metrics_auth)
    middleware = [Middleware(CatchAll)]
    if keys is not None or trusted:
        authenticate = Middleware(
            Authenticate,
            keys=keys,
            public=public_paths(operations),
            admin_prefix=events_prefix + "/admin",
        )
        middleware.append(authenticate)
    return Starlette(
        routes=build_routes(operations),
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
