"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from timefuse.entrypoints.api.access import FORBIDDEN, principal
from timefuse.entrypoints.api.envelope import fail, ok
from timefuse.entrypoints.api.errors import NOT_READY, ApiError
from timefuse.entrypoints.api.operations import Operation
from timefuse.entrypoints.auth import Role
from timefuse.service.metrics import Metrics

log = structlog.get_logger("timefuse.api")

Readiness = Callable[[], Awaitable[dict[str, str]]]

# A probe that hangs is a failed probe: orchestrators time out at a few seconds anyway.
READINESS_TIMEOUT_SECONDS = 5.0

# A part whose state starts with this is failing but the process does its job without it:
# ready, reported as DEGRADED rather than pulled from service.
DEGRADED = "degraded"


class HealthOut(msgspec.Struct, omit_defaults=True):
    """UP, DEGRADED (ready, a part failing that the process can do without) or DOWN; with
    readiness, what each part (store, buffer...) answered."""

    status: str
    checks: dict[str, str] | None = None


_UP = HealthOut("UP")


async def _up(request: Request) -> Response:
    return ok(_UP)


class Health:
    """:param metrics_auth: ``/metrics`` needs a key with the read role acting for every
    source (the figures count every source's events together)."""

    def __init__(
        self, metrics: Metrics, readiness: Readiness | None, *, metrics_auth: bool = False
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._metrics_auth = metrics_auth

    async def ready(self, request: Request) -> Response:
        """200 when every part answers "ok"; 503 naming each part that doesn't."""
        checks = await self._check()
        degraded = {part for part, state in checks.items() if state.startswith(DEGRADED)}
        failing = {
            part: state for part, state in checks.items() if state != "ok" and part not in degraded
        }
        if failing:
            reasons = "; ".join(f"{part}: {state}" for part, state in failing.items())
            data = HealthOut("DOWN", checks)
            return fail(503, NOT_READY, f"not ready: {reasons}", data=data)
        if degraded:
            message = "ready, degraded: " + "; ".join(f"{p}: {checks[p]}" for p in degraded)
            return ok(HealthOut("DEGRADED", checks), message=message)
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
        if self._metrics_auth:
            caller = principal(request)
            if not caller.has(Role.READ):
                raise ApiError(403, FORBIDDEN, "metrics need a key with the read role")
            if caller.sources is not None:
                raise ApiError(
                    403,
                    FORBIDDEN,
                    "metrics count the events of every source together: they need a key "
                    'acting for every source (sources = "*")',
                )
        # Counters and gauges only: the per-status gauge is refreshed by a background task,
        # so a scrape never costs a COUNT(*) (a defect of the seed).
        body = generate_latest(self._metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def health_operations(health: Health, events_prefix: str, *, metrics_auth: bool) -> list[Operation]:
    """Probes are public: orchestrators probe without keys. /metrics is too, unless asked."""
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
            role=Role.READ if metrics_auth else None, public=not metrics_auth,
            media_type=CONTENT_TYPE_LATEST.split(";")[0],
        ),
    ]  # fmt: skip


def health_routes(health: Health, events_prefix: str) -> list[Route]:
    return [
        Route("/health", _up, methods=["GET"]),
        Route("/health/live", _up, methods=["GET"]),
        Route("/health/ready", health.ready, methods=["GET"]),
        Route(events_prefix + "/health", _up, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]


def probe_paths(events_prefix: str) -> frozenset[str]:
    """The paths of :func:`health_routes` served without a key: all but ``/metrics``."""
    return frozenset({"/health", "/health/live", "/health/ready", events_prefix + "/health"})
