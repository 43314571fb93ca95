"""The filters of the event lists, read from and written back to the page's URL.

Every filter lives in the query string, so a filtered list (and each of its pages) is a link
an operator can share. A bad value is reported beside its field, never answered with an error
page. New criteria (delivery type, destination) are added here, in :class:`EventFilter`, once
the store's :class:`~timefuse.ports.store.EventQuery` can filter on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from timefuse.domain.cursor import Cursor
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import parse_instant
from timefuse.ports.store import EventQuery

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
_MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What an event list shows. Text fields hold what the visitor typed, for the form."""

    status: EventStatus | None = None
    source: str = ""
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None
    search: str = ""  # an event id, or an external id
    limit: int = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None
    typed: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def query(self, status: EventStatus | None = None) -> EventQuery:
        return EventQuery(
            status=status or self.status,
            sources=[self.source] if self.source else None,
            scheduled_from=self.scheduled_from,
            scheduled_to=self.scheduled_to,
        )

    def params(self, **changes: str | None) -> str:
        """This filter's query string, with ``changes`` (``None`` drops a parameter)."""
        values = {
            "status": self.status.value if self.status else None,
            "source": self.source or None,
            "from": self.typed.get("from") or None,
            "to": self.typed.get("to") or None,
            "q": self.search or None,
            "limit": str(self.limit) if self.limit != DEFAULT_PAGE_SIZE else None,
        }
        values.update(changes)
        kept = {name: value for name, value in values.items() if value}
        return urlencode(kept)

    def first_page(self) -> EventFilter:
        return replace(self, cursor=None)


def parse_filter(params: Mapping[str, str]) -> EventFilter:
    """The filter a list page's query string asks for; problems go to ``errors``."""
    errors: dict[str, str] = {}
    typed = {name: params.get(name, "").strip()[:_MAX_TEXT] for name in ("from", "to")}
    status = _status(params.get("status", ""), errors)
    source = params.get("source", "").strip()
    if len(source) > 100:
        errors["source"] = "a source has at most 100 characters"
        source = ""
    scheduled_from = _instant("from", typed["from"], errors)
    scheduled_to = _instant("to", typed["to"], errors)
    # Written back in UTC without an offset: what the page's date-time fields show.
    for name, moment in (("from", scheduled_from), ("to", scheduled_to)):
        if moment is not None:
            typed[name] = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if scheduled_from and scheduled_to and scheduled_to < scheduled_from:
        errors["to"] = "must not be before the start"
        scheduled_to = None
    return EventFilter(
        status=status,
        source=source,
        scheduled_from=scheduled_from,
        scheduled_to=scheduled_to,
        search=params.get("q", "").strip()[:_MAX_TEXT],
        limit=_limit(params.get("limit", "")),
        cursor=_cursor(params.get("cursor", ""), errors),
        typed=typed,
        errors=errors,
    )


def parse_time(text: str) -> datetime:
    """ISO-8601 with an offset, or without one (a browser's date-time field) read as UTC."""
    try:
        return parse_instant(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)  # ValueError propagates
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _instant(name: str, text: str, errors: dict[str, str]) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        errors[name] = "use a date and time such as 2025-01-31T09:30 (UTC) or one with an offset"
        return None


def _status(text: str, errors: dict[str, str]) -> EventStatus | None:
    if not text:
        return None
    try:
        return EventStatus(text.strip().upper())
    except ValueError:
        errors["status"] = "unknown status"
        return None


def _limit(text: str) -> int:
    return int(text) if text.isdigit() and int(text) in PAGE_SIZES else DEFAULT_PAGE_SIZE


def _cursor(text: str, errors: dict[str, str]) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.decode(text)
    except ValueError:
        errors["cursor"] = "this page link is broken; showing the first page"
        return None
