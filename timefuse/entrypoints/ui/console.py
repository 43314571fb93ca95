"""The operator console: pages at /ui, served by the API's own process.

:class:`ConsoleMount` sits in front of the API's routes and hands every path under the prefix
to the console's own Starlette app, which answers in HTML and does its own sign-in (the API's
bearer keys, kept in a session cookie); every other path goes on to the API untouched.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode

import structlog
from markupsafe import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from timefuse.entrypoints.api.access import Principal
from timefuse.entrypoints.api.refused import RefusedRecords
from timefuse.entrypoints.auth import KeyRing
from timefuse.entrypoints.ui.actions import Actions
from timefuse.entrypoints.ui.activity import Activity
from timefuse.entrypoints.ui.audit import ActionLog
from timefuse.entrypoints.ui.pages import Pages, Sources, frame
from timefuse.entrypoints.ui.render import Templates
from timefuse.entrypoints.ui.schedules import SchedulePages
from timefuse.entrypoints.ui.session import COOKIE, Sessions, new_session
from timefuse.entrypoints.ui.visit import Gate, Visit, may_sign_in, same_origin
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.store import StoreError
from timefuse.service.admin import Admin
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics
from timefuse.service.schedules import ScheduleService

log = structlog.get_logger("timefuse.console")

PREFIX = "/ui"
MAX_FORM_BYTES = 16 * 1024

Page = Callable[[Request, Visit], Awaitable[Response]]
Action = Callable[[Request, Visit, Mapping[str, str]], Awaitable[Response]]


class Console:
    """The console's app and the per-minute sampler its overview reads."""

    def __init__(
        self,
        *,
        service: EventService,
        metrics: Metrics,
        secret: str,
        keys: KeyRing | None,
        admin: Admin | None = None,
        registry: DeliveryRegistry | None = None,
        refused: RefusedRecords | None = None,
        schedules: ScheduleService | None = None,
    ) -> None:
        # Without a configured secret, one per process: sessions end when it restarts.
        self.gate = Gate(keys, Sessions(secret or secrets.token_urlsafe(32), PREFIX))
        self.activity = Activity(metrics)
        self.actions = ActionLog()
        self.templates = Templates()
        parts = Sources(service, self.activity, self.actions, admin, registry, refused)
        self.pages = Pages(parts, self.templates)
        acts = Actions(parts, self.pages)
        pages = self.pages
        plans = SchedulePages(schedules, pages, self.templates, self.actions)
        static = StaticFiles(packages=[("timefuse.entrypoints.ui", "static")])
        self.app = Starlette(
            routes=[
                Route("/", self._page(pages.overview)),
                Route("/events", self._page(pages.events)),
                Route("/events/{event_id}", self._page(pages.event)),
                Route("/events/{event_id}/cancel", self._action(acts.cancel), methods=["POST"]),
                Route(
                    "/events/{event_id}/reschedule",
                    self._action(acts.reschedule),
                    methods=["POST"],
                ),
                Route(
                    "/events/{event_id}/redeliver", self._action(acts.redeliver), methods=["POST"]
                ),
                Route("/dead-letters", self._page(pages.dead_letters)),
                Route("/dead-letters/refused", self._page(pages.refused)),
                Route("/dead-letters/redeliver", self._page(pages.confirm_bulk)),
                Route(
                    "/dead-letters/redeliver", self._action(acts.bulk_redeliver), methods=["POST"]
                ),
                Route("/destinations", self._page(pages.destinations)),
                Route("/destinations/reset", self._action(acts.reset_breaker), methods=["POST"]),
                Route("/delivery-types", self._page(pages.delivery_types)),
                Route("/schedules", self._page(plans.list)),
                Route("/schedules/{schedule_id}", self._page(plans.detail)),
                Route(
                    "/schedules/{schedule_id}/pause", self._action(plans.pause), methods=["POST"]
                ),
                Route(
                    "/schedules/{schedule_id}/resume", self._action(plans.resume), methods=["POST"]
                ),
                Route(
                    "/schedules/{schedule_id}/trigger",
                    self._action(plans.trigger),
                    methods=["POST"],
                ),
                Route("/login", self._login_page),
                Route("/login", self._sign_in, methods=["POST"]),
                Route("/logout", self._action(self._sign_out), methods=["POST"]),
            ],
            exception_handlers={
                404: self._unknown,
                405: self._unknown,
                StoreError: self._store_failed,
            },
        )
        # Static files are public: they hold no data. Mounted after the pages' routes.
        self.app.mount("/static", static, name="static")

    @asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        """Keep the per-minute figures while the server runs (the app's lifespan)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.activity.run(stop), name="console-activity")
        try:
            yield
        finally:
            stop.set()
            await task

    def _page(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if _arrived_from_another_site(request):
                return _reload_here(request)
            visit = self.gate.visit(request)
            if visit.who is None:
                return self._to_sign_in(request, visit)
            return self._with_session(await page(request, visit), visit, request)

        return endpoint

    def _action(self, action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            visit = self.gate.visit(request)
            form = await _read_form(request)
            if (
                form is None
                or not same_origin(request)
                or not visit.session.token_matches(form.get("csrf"))
            ):
                return self._refused(request, visit)
            if visit.who is None:
                return self._to_sign_in(request, visit)
            return self._with_session(await action(request, visit, form), visit, request)

        return endpoint

    def _with_session(self, response: Response, visit: Visit, request: Request) -> Response:
        if visit.fresh_session:
            self.gate.sessions.write(response, visit.session, request)
        return response

    def _to_sign_in(self, request: Request, visit: Visit) -> Response:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{_base(request)}/login?{urlencode({'next': wanted})}"
        return self._with_session(RedirectResponse(target, status_code=303), visit, request)

    def _refused(self, request: Request, visit: Visit) -> Response:
        log.warning(
            "console form refused: no valid CSRF token or another site's request",
            path=request.url.path,
            origin=request.headers.get("origin"),
        )
        context = frame(request, visit, "", "Request refused")
        context["message"] = (
            "This form was not sent from this console's own page (or its page is too old). "
            "Reload the page and try again."
        )
        response = self.templates.page("message.html", context, 403)
        return self._with_session(response, visit, request)

    async def _login_page(
        self, request: Request, error: str = "", status: int = 200, wanted: str | None = None
    ) -> Response:
        visit = self.gate.visit(request)
        wanted = request.query_params.get("next", "") if wanted is None else wanted
        if visit.who is not None:
            return RedirectResponse(_next(request, wanted), 303)
        context = frame(request, visit, "login", "Sign in")
        context.update(error=error, next=wanted)
        response = self.templates.page("login.html", context, status)
        return self._with_session(response, visit, request)

    async def _sign_in(self, request: Request) -> Response:
        visit = self.gate.visit(request)
        form = await _read_form(request)
        if (
            form is None
            or not same_origin(request)
            or not visit.session.token_matches(form.get("csrf"))
        ):
            return self._refused(request, visit)
        keys = self.gate.keys
        if keys is None:
            return RedirectResponse(_next(request, form.get("next")), 303)
        key = keys.find(form.get("key", "").strip())
        if key is None:
            log.info("console sign-in refused: unknown key")
            return await self._login_page(
                request, "That key is not valid.", 401, form.get("next", "")
            )
        if not may_sign_in(Principal.of_key(key)):
            return await self._login_page(
                request,
                "This key has no read role, so it can't see the console.",
                403,
                form.get("next", ""),
            )
        log.info("console sign-in", key=key.name)
        # A new session, and with it a new CSRF token, for the signed-in key.
        response = RedirectResponse(_next(request, form.get("next")), 303)
        self.gate.sessions.write(response, new_session(key.sha256), request)
        return response

    async def _sign_out(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        target = f"{_base(request)}/login?done=signed-out"
        response = RedirectResponse(target if not visit.open_console else f"{_base(request)}/", 303)
        self.gate.sessions.clear(response, request)
        return response

    async def _store_failed(self, request: Request, exc: Exception) -> Response:
        log.warning("console page failed: the store", path=request.url.path, error=str(exc))
        visit = self.gate.visit(request)
        context = frame(request, visit, "", "Store unavailable")
        context["message"] = "The event store did not answer; try again in a moment."
        response = self.templates.page("message.html", context, 503)
        return self._with_session(response, visit, request)

    async def _unknown(self, request: Request, exc: Exception) -> Response:
        visit = self.gate.visit(request)
        context = frame(request, visit, "", "Not found")
        context["message"] = "The console has no such page."
        return self._with_session(self.templates.page("message.html", context, 404), visit, request)


def _arrived_from_another_site(request: Request) -> bool:
    """A link followed from another site's page: the browser withheld the session cookie.

    SameSite=Strict keeps the cookie off every request another site starts, a link in a chat
    or a ticket included. Answering such a visit as a new one would replace the visitor's
    session (signing them out); instead the page reloads itself, a navigation of this site's
    own, which carries the cookie.
    """
    return request.headers.get("sec-fetch-site") == "cross-site" and COOKIE not in request.cookies


def _reload_here(request: Request) -> Response:
    here = escape(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0; url={here}"><title>timefuse console</title>'
        f'</head><body><p><a href="{here}">Continue to the console</a></p></body></html>'
    )
    return HTMLResponse(
        html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def _base(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root


def _next(request: Request, wanted: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    base = _base(request)
    if wanted and wanted.startswith(base + "/") and not wanted.startswith("//"):
        return wanted
    return base + "/"


async def _read_form(request: Request) -> dict[str, str] | None:
    """A url-encoded form body (what the console's forms send); ``None`` for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


class ConsoleMount:
    """Serve ``console`` under :data:`PREFIX`; pass every other request to ``app``."""

    def __init__(self, app: ASGIApp, *, console: Console) -> None:
        self.app = app
        self._console = console.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root: str = scope.get("root_path", "")
        path: str = scope["path"]
        # The path within this app: a server given a root path may include it in "path".
        inner = path[len(root) :] if root and path.startswith(root + "/") else path
        if not (inner == PREFIX or inner.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if inner == PREFIX:
            response = RedirectResponse(f"{root}{PREFIX}/", 307)
            await response(scope, receive, send)
            return
        child = {**scope, "root_path": root + PREFIX, "path": root + inner}
        child.setdefault("app_root_path", root)
        await self._console(child, receive, send)
