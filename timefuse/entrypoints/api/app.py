"""Assembling the Starlette application."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from timefuse.config import Settings
from timefuse.entrypoints.api.errors import EXCEPTION_HANDLERS, CatchAll
from timefuse.entrypoints.api.health import Health, Readiness, health_routes
from timefuse.entrypoints.api.routes import PREFIX, EventsApi, event_routes
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics


def create_app(
    *,
    service: EventService,
    metrics: Metrics,
    settings: Settings,
    readiness: Readiness | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    """The REST API over ``service``.

    :param readiness: returns, per part (store, buffer, ...), "ok" or what is wrong; the
        app answers ``/health/ready`` 503 naming each part that is not "ok".
    :param lifespan: opens and closes what the app needs, when the server runs it.
    """
    api = EventsApi(service, metrics, settings.max_body_bytes)
    health = Health(metrics, readiness)
    app = Starlette(
        routes=[*event_routes(api), *health_routes(health, PREFIX)],
        middleware=[Middleware(CatchAll)],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    # Paths are exact: a redirect to the slashed twin would answer a POST with a 307 that
    # many clients don't follow, and its absolute URL is wrong behind a proxy.
    app.router.redirect_slashes = False
    return app
