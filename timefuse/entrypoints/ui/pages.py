"""The console's pages: what they read, always within the visitor's sources."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from timefuse.domain.event import Event, is_event_id
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.api.access import Principal
from timefuse.entrypoints.api.refused import RefusedRecords, refused_rows
from timefuse.entrypoints.ui.activity import Activity, Percentile, percentiles
from timefuse.entrypoints.ui.audit import ActionLog
from timefuse.entrypoints.ui.charts import Line, Series, bar_chart, log_line_chart
from timefuse.entrypoints.ui.destinations import destination_rows
from timefuse.entrypoints.ui.filters import EXAMINED_PER_PAGE, EventFilter, parse_filter
from timefuse.entrypoints.ui.render import Templates, duration, payload_text
from timefuse.entrypoints.ui.visit import Visit
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.ingest import StreamUnavailable
from timefuse.ports.store import EventPage, EventQuery, WorkerRecord
from timefuse.service.admin import Admin
from timefuse.service.events import EventService

# An event due longer ago than this and still PENDING is overdue: the dispatcher normally
# claims within a poll interval.
OVERDUE_AFTER = timedelta(seconds=5)
# How many of the earliest-scheduled pending events the overview looks at for the most
# overdue one, and how many in-flight events for the dispatchers holding leases.
OVERDUE_SCAN = 50
LEASE_SCAN = 500
QUANTILES = (0.5, 0.9, 0.99)
# Bulk redelivery acts on at most this many dead letters at a time (the API's default).
MAX_BULK = 10_000
_COUNT_PAGE = 1000
FLASH = {
    "cancelled": "Event cancelled.",
    "redelivered": "Event redelivered: it is pending and due now.",
    "not-pending": "Nothing done: only a pending event can be cancelled, and this one is not.",
    "rescheduled": "Event rescheduled: it is delivered at its new due time.",
    "not-movable": "Nothing done: only a pending event can be rescheduled, and this one is not.",
    "not-redeliverable": "Nothing done: only a completed, failed or dead-lettered event can be "
    "redelivered.",
    "bulk": "Dead letters redelivered.",
    "reset": "Circuit breaker closed.",
    "signed-out": "Signed out.",
    "schedule-paused": "Schedule paused: it creates no occurrence until resumed.",
    "schedule-resumed": "Schedule resumed.",
    "schedule-busy": "Nothing done: the schedule kept changing meanwhile; try again.",
    "triggered": "Occurrence created, due now (it does not count against the schedule's runs).",
    "trigger-refused": "Nothing done: the schedule's event template is no longer accepted.",
}


@dataclass(frozen=True, slots=True)
class Sources:
    """The parts of the process the pages read."""

    service: EventService
    activity: Activity
    actions: ActionLog
    admin: Admin | None
    registry: DeliveryRegistry | None
    refused: RefusedRecords | None = None


def frame(request: Request, visit: Visit, current: str, title: str) -> dict[str, Any]:
    """What every page's layout needs."""
    flash = FLASH.get(request.query_params.get("done", ""))
    count = request.query_params.get("n", "")
    if flash and count.isdigit():
        flash = f"{flash} ({int(count):,} events)"
    return {
        "base": request.scope.get("root_path", ""),
        "visit": visit,
        "who": visit.who,
        "can": visit.abilities if visit.who is not None else None,
        "csrf": visit.session.csrf,
        "current": current,
        "title": title,
        "flash": flash,
        "statuses": [status.value for status in EventStatus],
    }


class Pages:
    def __init__(self, parts: Sources, templates: Templates) -> None:
        self._parts = parts
        self._templates = templates

    async def overview(self, request: Request, visit: Visit) -> Response:
        who = _who(visit)
        service = self._parts.service
        counts = await service.statistics(sources=who.sources)
        context = frame(request, visit, "overview", "Overview")
        every_source = who.sources is None
        # The processes are everybody's: a key for some sources sees who delivers its own.
        workers = await self._workers() if every_source else None
        context.update(
            counts=counts,
            overdue=await self._oldest_overdue(who),
            workers=workers,
            dispatching=any(alive and "dispatch" in w.roles for w, alive in workers or []),
            holders=None if every_source else await self._lease_holders(who),
            activity=self._activity() if every_source else None,
        )
        return self._templates.page("overview.html", context)

    async def _workers(self) -> list[tuple[WorkerRecord, bool]] | None:
        admin = self._parts.admin
        return None if admin is None else await admin.workers()

    def _activity(self) -> Mapping[str, Any]:
        activity = self._parts.activity
        activity.sample()
        per_minute = activity.per_minute()
        minutes = [tally for _, tally in per_minute]
        series = [
            Series("submitted", "Submitted", [t.submitted for t in minutes]),
            Series("delivered", "Delivered", [t.delivered for t in minutes]),
            Series("failed", "Failed attempts", [t.failed for t in minutes]),
        ]
        hour = activity.last_hour()
        since_start = activity.read_metrics()
        late = [percentiles(activity.bounds, t.lateness, QUANTILES) for t in minutes]
        hour_late = percentiles(activity.bounds, hour.lateness, QUANTILES)
        return {
            "charts": [(s, bar_chart(s), sum(s.values)) for s in series],
            "lateness_chart": log_line_chart(
                "chart-lateness",
                "Lateness of deliveries per minute, last 60 minutes: p50, p90 and p99",
                [
                    Line(
                        f"p{round(q * 100)}",
                        f"p{round(q * 100)}",
                        [p[i].seconds if p else None for p in late],
                    )
                    for i, q in enumerate(QUANTILES)
                ],
                _describe_lateness(hour_late),
            ),
            "hour": hour_late,
            "since_start": percentiles(activity.bounds, since_start.lateness, QUANTILES),
            "started": datetime.fromtimestamp(activity.started, UTC),
            # The charts' figures as a table, for screen readers and copying: busy minutes only.
            "rows": [
                (
                    datetime.fromtimestamp(minute * 60, UTC),
                    t.submitted,
                    t.delivered,
                    t.failed,
                    None if found is None else (found[0], found[-1]),
                )
                for (minute, t), found in zip(per_minute, late, strict=True)
                if t.submitted or t.delivered or t.failed
            ],
        }

    async def _oldest_overdue(self, who: Principal) -> tuple[Event, float] | None:
        now = datetime.now(UTC)
        due_before = now - OVERDUE_AFTER
        query = EventQuery(
            status=EventStatus.PENDING, scheduled_to=due_before, examine_at_most=EXAMINED_PER_PAGE
        )
        page = await self._parts.service.list_events(query, OVERDUE_SCAN, sources=who.sources)
        # Listed by scheduled time; a retry's next attempt may lie later than its schedule.
        late = [event for event in page.events if event.next_attempt_at <= due_before]
        if not late:
            return None
        oldest = min(late, key=lambda event: event.next_attempt_at)
        return oldest, (now - oldest.next_attempt_at).total_seconds()

    async def _lease_holders(self, who: Principal) -> list[tuple[str, int]]:
        query = EventQuery(status=EventStatus.PROCESSING, examine_at_most=EXAMINED_PER_PAGE)
        page = await self._parts.service.list_events(query, LEASE_SCAN, sources=who.sources)
        holders = Counter(event.locked_by or "?" for event in page.events)
        return sorted(holders.items())

    async def events(self, request: Request, visit: Visit) -> Response:
        return await self._list(request, visit, dead_letters=False)

    async def dead_letters(self, request: Request, visit: Visit) -> Response:
        return await self._list(request, visit, dead_letters=True)

    async def _list(self, request: Request, visit: Visit, *, dead_letters: bool) -> Response:
        who = _who(visit)
        chosen = parse_filter(request.query_params)
        status = EventStatus.DEAD_LETTER if dead_letters else chosen.status
        searched = None
        if chosen.search and not dead_letters:
            found = await self._search(chosen, who)
            if isinstance(found, Event):
                base = request.scope.get("root_path", "")
                return RedirectResponse(f"{base}/events/{found.id}", status_code=303)
            page, searched = EventPage(found, None), True
        else:
            page = await self._parts.service.list_events(
                chosen.query(status), chosen.limit, chosen.cursor, sources=who.sources
            )
        name = "dead-letters" if dead_letters else "events"
        context = frame(request, visit, name, "Dead letters" if dead_letters else "Events")
        cursor = page.next_cursor
        context.update(
            filter=chosen,
            page=page,
            searched=searched,
            next_params=chosen.params(cursor=cursor.encode()) if cursor else None,
            # A page cut short by its window (see EXAMINED_PER_PAGE) says how far it looked.
            looked_until=cursor.scheduled_at
            if cursor and len(page.events) < chosen.limit
            else None,
            examined=EXAMINED_PER_PAGE,
            own_sources=sorted(who.sources) if who.sources is not None else None,
            delivery_types=self._type_names(chosen.delivery_type),
            kafka_ingest=self._parts.refused is not None,
            dead_letters=dead_letters,
        )
        return self._templates.page("events.html", context, 400 if chosen.errors else 200)

    def _type_names(self, chosen: str) -> list[str] | None:
        """The delivery types to choose from: this process's, and one asked for in the URL."""
        registry = self._parts.registry
        if registry is None:
            return None
        names = sorted(registry.names())
        return names if not chosen or chosen in names else [*names, chosen]

    async def _search(self, chosen: EventFilter, who: Principal) -> Event | list[Event]:
        """The event with that id, else the events of that external id (the only one: it)."""
        service = self._parts.service
        if is_event_id(chosen.search):
            event = await service.get(str(uuid.UUID(chosen.search)), sources=who.sources)
            if event is not None:
                return event
        found = await service.find_by_external_id(chosen.search, sources=who.sources)
        query = chosen.query()
        matching = [event for event in found if _matches(event, query)]
        if len(matching) == 1:
            return matching[0]
        return sorted(
            matching, key=lambda event: (event.scheduled_at, event.id), reverse=query.descending
        )

    async def event(
        self,
        request: Request,
        visit: Visit,
        *,
        move_error: str = "",
        move_typed: str = "",
    ) -> Response:
        """An event's page; after a refused reschedule, with the reason beside its field."""
        who = _who(visit)
        event = await self._visible_event(request, who)
        if event is None:
            return self.not_found(request, visit, "No such event, or not one this key may see.")
        attempts = await self._parts.service.attempts(event.id, sources=who.sources) or []
        pretty, raw, cut = payload_text(event.payload)
        context = frame(request, visit, "events", f"Event {event.external_job_id}")
        context.update(
            event=event,
            attempts=list(reversed(attempts)),
            payload_pretty=pretty,
            payload_raw=raw,
            payload_cut=cut,
            payload_size=len(event.payload),
            actions=[
                (datetime.fromtimestamp(a.at, UTC), a) for a in self._parts.actions.about(event.id)
            ],
            move_error=move_error,
            move_value=move_typed
            or event.next_attempt_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        )
        return self._templates.page("event.html", context, 400 if move_error else 200)

    async def _visible_event(self, request: Request, who: Principal) -> Event | None:
        raw = request.path_params["event_id"]
        if not is_event_id(raw):
            return None
        return await self._parts.service.get(str(uuid.UUID(raw)), sources=who.sources)

    async def confirm_bulk(self, request: Request, visit: Visit) -> Response:
        """How many dead letters a bulk redelivery would touch, and the button to do it."""
        who = _who(visit)
        if not visit.abilities.bulk_redeliver:
            return self.forbidden(
                request, visit, "Bulk redelivery needs an admin key that may act."
            )
        chosen = parse_filter(request.query_params)
        if chosen.errors:
            return await self.dead_letters(request, visit)
        count = await self.count_dead_letters(chosen, who)
        context = frame(request, visit, "dead-letters", "Redeliver dead letters")
        context.update(filter=chosen, count=count, capped=count >= MAX_BULK, cap=MAX_BULK)
        return self._templates.page("confirm_bulk.html", context)

    async def count_dead_letters(self, chosen: EventFilter, who: Principal) -> int:
        """Dead letters matching ``chosen``, up to :data:`MAX_BULK` (one index range)."""
        query = chosen.query(EventStatus.DEAD_LETTER)
        count, after = 0, None
        while count < MAX_BULK:
            page = await self._parts.service.list_events(
                query, min(_COUNT_PAGE, MAX_BULK - count), after, sources=who.sources
            )
            count += len(page.events)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        return count

    async def refused(self, request: Request, visit: Visit) -> Response:
        """The ingest records the Kafka consumer refused: read as the admin API reads them."""
        if not visit.abilities.see_admin:
            return self.forbidden(
                request, visit, "Records refused at ingest are shown to admin keys only."
            )
        reader = self._parts.refused
        limit = parse_filter(request.query_params).limit
        context = frame(request, visit, "dead-letters", "Refused at ingest")
        context.update(topic=None if reader is None else reader.topic, limit=limit, failure=None)
        rows = None
        if reader is not None:
            try:
                rows = await refused_rows(reader, limit)
            except StreamUnavailable as exc:
                context["failure"] = str(exc)
        context["rows"] = rows
        status = 503 if context["failure"] else 200
        return self._templates.page("refused.html", context, status)

    async def destinations(self, request: Request, visit: Visit) -> Response:
        if not visit.abilities.see_admin:
            return self.forbidden(request, visit, "The destinations page needs an admin key.")
        admin = self._parts.admin
        context = frame(request, visit, "destinations", "Destinations")
        context.update(rows=None if admin is None else destination_rows(admin.destinations()))
        return self._templates.page("destinations.html", context)

    async def delivery_types(self, request: Request, visit: Visit) -> Response:
        registry = self._parts.registry
        context = frame(request, visit, "delivery-types", "Delivery types")
        context.update(types=registry.types() if registry is not None else None)
        return self._templates.page("delivery_types.html", context)

    def not_found(self, request: Request, visit: Visit, message: str) -> Response:
        context = frame(request, visit, "", "Not found")
        context.update(message=message)
        return self._templates.page("message.html", context, 404)

    def forbidden(self, request: Request, visit: Visit, message: str) -> Response:
        context = frame(request, visit, "", "Not allowed")
        context.update(message=message)
        return self._templates.page("message.html", context, 403)


def _on_host(key: str, host: str) -> bool:
    found, _, port = key.rpartition(":")
    return found == host and port.isdigit()


def _describe_lateness(found: list[Percentile] | None) -> str:
    if found is None:
        return "No delivery in the last hour."
    figures = ", ".join(
        f"p{round(p.quantile * 100)} {'over ' if p.beyond else ''}{duration(p.seconds)}"
        for p in found
    )
    return f"Over the last hour: {figures}."


def _who(visit: Visit) -> Principal:
    assert visit.who is not None, "pages are served to signed-in visitors only"
    return visit.who


def _matches(event: Event, query: EventQuery) -> bool:
    """Whether a found event meets the list's filters (a search looks events up by id)."""
    host = query.destination_host
    return (
        (query.status is None or event.status is query.status)
        and (query.sources is None or event.source in query.sources)
        and (query.scheduled_from is None or event.scheduled_at >= query.scheduled_from)
        and (query.scheduled_to is None or event.scheduled_at < query.scheduled_to)
        and (query.delivery_type is None or event.delivery_type == query.delivery_type)
        and (query.destination_key is None or event.destination_key == query.destination_key)
        and (host is None or _on_host(event.destination_key, host))
        and (
            query.destination_prefix is None
            or event.destination.startswith(query.destination_prefix)
        )
    )
