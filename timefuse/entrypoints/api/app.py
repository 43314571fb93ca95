"""Assembling the Starlette application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from timefuse.config import ApiSettings
from timefuse.entrypoints.api.access import Authenticate
from timefuse.entrypoints.api.admin import AdminApi, admin_operations
from timefuse.entrypoints.api.body import BodyLimits
from timefuse.entrypoints.api.errors import EXCEPTION_HANDLERS, CatchAll
from timefuse.entrypoints.api.health import Health, Readiness, health_operations
from timefuse.entrypoints.api.openapi import ApiDescription, Limits, build_spec
from timefuse.entrypoints.api.operations import build_routes, public_paths
from timefuse.entrypoints.api.refused import RefusedRecords
from timefuse.entrypoints.api.routes import ADMIN_PREFIX, PREFIX, EventsApi, event_operations
from timefuse.entrypoints.api.schedules import SchedulesApi, schedule_operations
from timefuse.entrypoints.api.signing_keys import SigningKeysApi, signing_key_operations
from timefuse.entrypoints.auth import KeyRing, load_key_ring
from timefuse.entrypoints.ui import Console, ConsoleMount
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.service.admin import Admin
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics
from timefuse.service.schedules import ScheduleService

# Keys come from the settings unless the caller passes them (or None, for none).
_FROM_SETTINGS = KeyRing(())


def create_app(
    *,
    service: EventService,
    metrics: Metrics,
    settings: ApiSettings,
    http_settings: HttpSettings | None = None,
    readiness: Readiness | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    keys: KeyRing | None = _FROM_SETTINGS,
    admin: Admin | None = None,
    registry: DeliveryRegistry | None = None,
    refused: RefusedRecords | None = None,
    schedules: ScheduleService | None = None,
) -> Starlette:
    """The REST API over ``service``.

    :param settings: the API's section: listening, limits, keys, the console.
    :param http_settings: the http delivery type's section, whose webhook signing keys the
        admin API lists and rotates; without it there are none to list or rotate.
    :param readiness: returns, per part (store, buffer, ...), "ok" (or "ok, " and a detail)
        or what is wrong; the app answers ``/health/ready`` 503 naming each part that is not ok.
    :param lifespan: opens and closes what the app needs, when the server runs it.
    :param keys: the API keys; by default those of ``TIMEFUSE_API_KEYS_FILE``. ``None``
        turns authentication off.
    :param admin: retention on demand and this process's destinations; without it the app
        has no operations for them (bulk redelivery needs only ``service``).
    :param registry: the delivery types, for the console's page about them.
    :param refused: the ingest records the Kafka consumer refused (``None`` without Kafka).
    :param schedules: the schedules' use cases; without it the app has no /api/v1/schedules.

    Unless ``TIMEFUSE_UI`` is off, the operator console is served at ``/ui`` with the same
    keys; its per-minute figures are kept while the app's lifespan runs.
    """
    if keys is _FROM_SETTINGS:
        keys = load_key_ring(settings)
    limits = BodyLimits(settings.max_body_bytes, settings.max_json_depth)
    reject_unknown = settings.unknown_fields == "reject"
    api = EventsApi(
        service, metrics, limits, settings.max_batch_events, reject_unknown=reject_unknown
    )
    schedules_api = (
        SchedulesApi(schedules, limits, reject_unknown=reject_unknown) if schedules else None
    )
    description = ApiDescription()
    operations = [
        *event_operations(api),
        *admin_operations(AdminApi(service, admin, limits, refused), ADMIN_PREFIX),
        *signing_key_operations(SigningKeysApi.from_settings(http_settings, limits), ADMIN_PREFIX),
        *(schedule_operations(schedules_api) if schedules_api else []),
        *health_operations(
            Health(metrics, readiness),
            PREFIX,
            metrics_auth=settings.metrics_auth,
        ),
        *description.operations(),
    ]
    description.publish(
        build_spec(
            operations,
            auth=keys is not None,
            limits=Limits(
                settings.max_body_bytes, settings.max_json_depth, settings.max_batch_events
            ),
        )
    )
    authenticate = Middleware(
        Authenticate, keys=keys, public=public_paths(operations), admin_prefix=ADMIN_PREFIX
    )
    console = None
    if settings.ui:
        console = Console(
            service=service,
            metrics=metrics,
            secret=settings.ui_secret,
            keys=keys,
            admin=admin,
            registry=registry,
            refused=refused,
            schedules=schedules,
        )
    app = Starlette(
        routes=build_routes(operations),
        # CatchAll outermost, so a failure in authentication is still a 500 envelope. The
        # console does its own sign-in (a session cookie), so it sits before the API's.
        middleware=[
            Middleware(CatchAll),
            *([Middleware(ConsoleMount, console=console)] if console is not None else []),
            authenticate,
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=_with_console(console, lifespan),
    )
    app.state.console = console
    # Paths are exact: a redirect to the slashed twin would answer a POST with a 307 that
    # many clients don't follow, and its absolute URL is wrong behind a proxy.
    app.router.redirect_slashes = False
    return app


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def _with_console(console: Console | None, lifespan: Lifespan | None) -> Lifespan | None:
    if console is None:
        return lifespan

    @asynccontextmanager
    async def both(app: Starlette) -> AsyncIterator[None]:
        async with console.sampling():
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield

    return both
