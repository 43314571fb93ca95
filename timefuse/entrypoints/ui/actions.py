"""The console's actions: cancel, reschedule, redeliver, bulk redelivery, closing a breaker.

Each is a POST from a form of the console (the guard in :mod:`timefuse.entrypoints.ui.console`
has already checked the session, its CSRF token and the request's origin), checks the
visitor's abilities, is recorded with the key's name, and answers with a redirect to a page
that says what happened (post/redirect/get: a reload doesn't repeat the action).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC
from typing import TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from timefuse.domain.event import is_event_id
from timefuse.domain.validation import ValidationFailed
from timefuse.entrypoints.api.access import Principal
from timefuse.entrypoints.ui.filters import parse_filter, parse_time
from timefuse.entrypoints.ui.pages import MAX_BULK, Pages, Sources
from timefuse.entrypoints.ui.visit import Visit
from timefuse.ports.store import CancelResult, MoveDueResult, RedeliverResult

R = TypeVar("R", bound=enum.Enum)

# What the event's page is told of each outcome (``?done=``); any other is "no such event".
_CANCEL_DONE = {CancelResult.CANCELLED: "cancelled", CancelResult.NOT_PENDING: "not-pending"}
_REDELIVER_DONE = {
    RedeliverResult.REDELIVERED: "redelivered",
    RedeliverResult.NOT_REDELIVERABLE: "not-redeliverable",
}


class Actions:
    def __init__(self, parts: Sources, pages: Pages) -> None:
        self._parts = parts
        self._pages = pages

    async def cancel(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        cancel = self._parts.service.cancel
        return await self._act_on_event(
            request, visit, visit.abilities.cancel, "cancel", cancel, _CANCEL_DONE
        )

    async def reschedule(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        """Deliver a pending event at another time (``due_at``: UTC, or with an offset)."""
        if not visit.abilities.reschedule:
            return self._pages.forbidden(request, visit, "This key may not reschedule events.")
        event_id = _event_id(request)
        who = _who(visit)
        if event_id is None:
            return self._pages.not_found(request, visit, "No such event.")
        typed = form.get("due_at", "").strip()[:64]
        try:
            due_at = parse_time(typed)
        except ValueError:
            error = "Use a date and time such as 2025-01-31T09:30 (UTC) or one with an offset."
            return await self._pages.event(request, visit, move_error=error, move_typed=typed)
        try:
            result = await self._parts.service.move_due(event_id, due_at, sources=who.sources)
        except ValidationFailed as exc:
            error = "The new time " + "; ".join(e.message for e in exc.errors) + "."
            return await self._pages.event(request, visit, move_error=error, move_typed=typed)
        if result is MoveDueResult.NOT_FOUND:
            return self._pages.not_found(request, visit, "No such event.")
        when = due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._parts.actions.record(
            who.name, f"reschedule to {when}", event_id, result.value, due_at=due_at.isoformat()
        )
        done = "rescheduled" if result is MoveDueResult.MOVED else "not-movable"
        return _back(request, f"/events/{event_id}?done={done}")

    async def redeliver(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        redeliver = self._parts.service.redeliver
        return await self._act_on_event(
            request, visit, visit.abilities.redeliver, "redeliver", redeliver, _REDELIVER_DONE
        )

    async def bulk_redeliver(
        self, request: Request, visit: Visit, form: Mapping[str, str]
    ) -> Response:
        if not visit.abilities.bulk_redeliver:
            return self._pages.forbidden(
                request, visit, "Bulk redelivery needs an admin key that may act."
            )
        who = _who(visit)
        chosen = parse_filter(form)
        confirmed = form.get("count", "")
        if chosen.errors or not confirmed.isdigit():
            return self._pages.forbidden(request, visit, "This confirmation is incomplete.")
        # Never more than the confirmation said: dead letters that arrived since wait.
        limit = min(int(confirmed), MAX_BULK)
        count = 0
        if limit > 0:
            count = await self._parts.service.redeliver_dead_letters(
                source=chosen.source or None,
                scheduled_from=chosen.scheduled_from,
                scheduled_to=chosen.scheduled_to,
                limit=limit,
                sources=who.sources,
            )
        self._parts.actions.record(
            who.name,
            "redeliver dead letters",
            chosen.params() or "(all)",
            f"{count} redelivered",
            count=count,
        )
        return _back(request, f"/dead-letters?{chosen.params(done='bulk', n=str(count))}")

    async def reset_breaker(
        self, request: Request, visit: Visit, form: Mapping[str, str]
    ) -> Response:
        admin = self._parts.admin
        if not visit.abilities.reset_breaker or admin is None:
            return self._pages.forbidden(
                request, visit, "Closing a breaker needs an admin key that may act."
            )
        key = form.get("key", "")
        state = admin.reset_destination(key)
        if state is None:
            return self._pages.not_found(request, visit, "This process knows no such destination.")
        self._parts.actions.record(_who(visit).name, "reset breaker", key, "CLOSED")
        return _back(request, f"/destinations?done=reset#{quote(key)}")

    async def _act_on_event(
        self,
        request: Request,
        visit: Visit,
        allowed: bool,
        verb: str,
        act: Callable[..., Awaitable[R]],
        done: Mapping[R, str],
    ) -> Response:
        """``act`` on the page's event; ``done`` names its outcomes but "no such event"."""
        if not allowed:
            return self._pages.forbidden(request, visit, f"This key may not {verb} events.")
        event_id = _event_id(request)
        who = _who(visit)
        if event_id is None:
            return self._pages.not_found(request, visit, "No such event.")
        result = await act(event_id, sources=who.sources)
        if result not in done:
            return self._pages.not_found(request, visit, "No such event.")
        self._parts.actions.record(who.name, verb, event_id, result.value)
        return _back(request, f"/events/{event_id}?done={done[result]}")


def _who(visit: Visit) -> Principal:
    assert visit.who is not None, "actions are taken by signed-in visitors only"
    return visit.who


def _event_id(request: Request) -> str | None:
    raw: str = request.path_params["event_id"]
    return str(uuid.UUID(raw)) if is_event_id(raw) else None


def _back(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)
