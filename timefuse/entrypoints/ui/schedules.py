"""The console's schedules: the list with next runs, a schedule's page with its occurrences,
and pause, resume and trigger.

Everything goes through the schedules' use cases with the visitor's sources, as the REST API
does: a key scoped to sources neither sees nor changes another source's schedules, whatever
URL it types. Pausing, resuming and triggering take the submit role, as in the API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from timefuse.domain.cursor import Cursor
from timefuse.domain.schedule import ScheduleState
from timefuse.domain.validation import ValidationFailed
from timefuse.entrypoints.api.access import Principal
from timefuse.entrypoints.ui.audit import ActionLog
from timefuse.entrypoints.ui.pages import Pages, frame
from timefuse.entrypoints.ui.render import Templates
from timefuse.entrypoints.ui.visit import Visit
from timefuse.ports.store import SchedulePosition, ScheduleQuery, ScheduleRecord
from timefuse.service.schedules import ScheduleBusy, ScheduleService

PAGE_SIZE = 50
OCCURRENCES_PAGE = 25
NEXT_RUNS = 5
_MAX_SOURCE = 100


class SchedulePages:
    def __init__(
        self,
        service: ScheduleService | None,
        pages: Pages,
        templates: Templates,
        actions: ActionLog,
    ) -> None:
        self._service = service
        self._pages = pages
        self._templates = templates
        self._actions = actions
        self._record = actions.record

    # -- pages -------------------------------------------------------------------------------

    async def list(self, request: Request, visit: Visit) -> Response:
        who = _who(visit)
        params = request.query_params
        errors: dict[str, str] = {}
        state = _state(params.get("state", ""), errors)
        source = params.get("source", "").strip()
        if len(source) > _MAX_SOURCE:
            errors["source"] = f"a source has at most {_MAX_SOURCE} characters"
            source = ""
        after = _position(params.get("cursor", ""), errors)
        context = frame(request, visit, "schedules", "Schedules")
        context.update(
            state=state.value if state else "",
            source=source,
            states=[s.value for s in ScheduleState],
            own_sources=sorted(who.sources) if who.sources is not None else None,
            errors=errors,
            rows=None,
            next_params=None,
            first_params=_params(state=state.value if state else "", source=source)
            if after
            else None,
        )
        if self._service is not None:
            query = ScheduleQuery(sources=frozenset({source}) if source else None, state=state)
            page = await self._service.list(query, PAGE_SIZE, after, sources=who.sources)
            context["rows"] = page.schedules
            if page.next_after is not None:
                context["next_params"] = _params(
                    state=state.value if state else "",
                    source=source,
                    cursor=page.next_after.encode(),
                )
        return self._templates.page("schedules.html", context, 400 if errors else 200)

    async def detail(self, request: Request, visit: Visit) -> Response:
        who = _who(visit)
        found = await self._visible(request, who)
        if found is None:
            return self._pages.not_found(
                request, visit, "No such schedule, or not one this key may see."
            )
        service, record = found
        errors: dict[str, str] = {}
        before = _cursor(request.query_params.get("cursor", ""), errors)
        occurrences = await service.occurrences(
            record.id, OCCURRENCES_PAGE, before, sources=who.sources
        )
        s = record.schedule
        context = frame(request, visit, "schedules", f"Schedule {s.key}")
        context.update(
            record=record,
            schedule=s,
            state=record.state.value,
            next_runs=service.next_runs(record, NEXT_RUNS),
            template=_template_text(s.template),
            occurrences=[] if occurrences is None else occurrences.events,
            older=None
            if occurrences is None or occurrences.next_cursor is None
            else _params(cursor=occurrences.next_cursor.encode()),
            newer=before is not None,
            errors=errors,
            actions=[
                (datetime.fromtimestamp(a.at, UTC), a) for a in self._actions.about(record.id)
            ],
        )
        return self._templates.page("schedule.html", context, 400 if errors else 200)

    # -- actions -----------------------------------------------------------------------------

    async def pause(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        return await self._change(request, visit, paused=True)

    async def resume(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        return await self._change(request, visit, paused=False)

    async def _change(self, request: Request, visit: Visit, *, paused: bool) -> Response:
        if not visit.abilities.manage_schedules:
            return self._pages.forbidden(request, visit, "This key may not change schedules.")
        who = _who(visit)
        found = await self._visible(request, who)
        if found is None:
            return self._pages.not_found(request, visit, "No such schedule.")
        service, record = found
        change = service.pause if paused else service.resume
        try:
            changed = await change(record.id, sources=who.sources)
        except ScheduleBusy:
            return _back(request, f"/schedules/{record.id}?done=schedule-busy")
        if changed is None:
            return self._pages.not_found(request, visit, "No such schedule.")
        verb = "pause schedule" if paused else "resume schedule"
        self._record(who.name, verb, record.id, changed.state.value)
        done = "schedule-paused" if paused else "schedule-resumed"
        return _back(request, f"/schedules/{record.id}?done={done}")

    async def trigger(self, request: Request, visit: Visit, form: Mapping[str, str]) -> Response:
        if not visit.abilities.manage_schedules:
            return self._pages.forbidden(request, visit, "This key may not trigger schedules.")
        who = _who(visit)
        found = await self._visible(request, who)
        if found is None:
            return self._pages.not_found(request, visit, "No such schedule.")
        service, record = found
        try:
            event = await service.trigger(record.id, sources=who.sources)
        except ValidationFailed:
            return _back(request, f"/schedules/{record.id}?done=trigger-refused")
        if event is None:
            return self._pages.not_found(request, visit, "No such schedule.")
        self._record(who.name, "trigger schedule", record.id, f"event {event.id}")
        return _back(request, f"/schedules/{record.id}?done=triggered")

    async def _visible(
        self, request: Request, who: Principal
    ) -> tuple[ScheduleService, ScheduleRecord] | None:
        raw: str = request.path_params["schedule_id"]
        if self._service is None or not _is_uuid(raw):
            return None
        record = await self._service.get(str(uuid.UUID(raw)), sources=who.sources)
        return None if record is None else (self._service, record)


def _template_text(template: Mapping[str, object]) -> str:
    """The event template as JSON, its payload (kept as raw JSON bytes) included."""
    shown: dict[str, object] = {}
    for name, value in template.items():
        if isinstance(value, bytes):
            try:
                shown[name] = json.loads(value)
            except ValueError:
                shown[name] = value.decode("utf-8", "replace")
        else:
            shown[name] = value
    return json.dumps(shown, indent=2, ensure_ascii=False, default=str)


def _params(**values: str) -> str:
    return urlencode({name: value for name, value in values.items() if value})


def _state(text: str, errors: dict[str, str]) -> ScheduleState | None:
    if not text:
        return None
    try:
        return ScheduleState(text.strip().upper())
    except ValueError:
        errors["state"] = "unknown state"
        return None


def _position(text: str, errors: dict[str, str]) -> SchedulePosition | None:
    if not text:
        return None
    try:
        return SchedulePosition.decode(text)
    except ValueError:
        errors["cursor"] = "this page link is broken; showing the first page"
        return None


def _cursor(text: str, errors: dict[str, str]) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.decode(text)
    except ValueError:
        errors["cursor"] = "this page link is broken; showing the newest occurrences"
        return None


def _is_uuid(raw: str) -> bool:
    if len(raw) != 36:
        return False
    try:
        uuid.UUID(raw)
    except ValueError:
        return False
    return True


def _who(visit: Visit) -> Principal:
    assert visit.who is not None, "pages are served to signed-in visitors only"
    return visit.who


def _back(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)
