"""The filters of the event lists, read from and written back to the page's URL.

Every filter lives in the query string, so a filtered list (and each of its pages) is a link
an operator can share. A bad value is reported beside its field, never answered with an error
page.

The destination field takes what an operator has at hand: a URL's beginning
(``https://hooks.example/orders``: destinations that start with it, as written), a host
(``hooks.example``: any port of it), ``host:port``, or a non-URL destination's key
(``kafka:orders``); hosts and ports are read as the dispatcher keys them, so
``HOOKS.example:443`` finds ``https://hooks.example/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from timefuse.domain.cursor import Cursor
from timefuse.domain.destination import normalise_destination_limit_key
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import parse_instant
from timefuse.ports.store import EventQuery

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
# A page looks at no more events than this to fill itself with the rarer criteria (source,
# delivery type, destination): it stays an index walk of bounded length on any store.
EXAMINED_PER_PAGE = 10_000
_MAX_TEXT = 255
_MAX_DESTINATION = 2048


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What an event list shows. Text fields hold what the visitor typed, for the form."""

    status: EventStatus | None = None
    source: str = ""
    delivery_type: str = ""
    destination: str = ""  # as typed; read into one of the three below
    destination_key: str | None = None
    destination_host: str | None = None
    destination_prefix: str | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None
    search: str = ""  # an event id, or an external id
    newest_first: bool = False
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
            delivery_type=self.delivery_type or None,
            destination_key=self.destination_key,
            destination_host=self.destination_host,
            destination_prefix=self.destination_prefix,
            descending=self.newest_first,
            examine_at_most=EXAMINED_PER_PAGE,
        )

    @property
    def narrows_by_receiver(self) -> bool:
        return bool(self.delivery_type or self.destination)

    def params(self, **changes: str | None) -> str:
        """This filter's query string, with ``changes`` (``None`` drops a parameter)."""
        values = {
            "status": self.status.value if self.status else None,
            "source": self.source or None,
            "type": self.delivery_type or None,
            "destination": self.destination or None,
            "from": self.typed.get("from") or None,
            "to": self.typed.get("to") or None,
            "q": self.search or None,
            "order": "newest" if self.newest_first else None,
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
    delivery_type = params.get("type", "").strip()
    if len(delivery_type) > 64:
        errors["type"] = "a delivery type's name has at most 64 characters"
        delivery_type = ""
    destination = params.get("destination", "").strip()[:_MAX_DESTINATION]
    receiver = _destination(destination, errors)
    return EventFilter(
        status=status,
        source=source,
        delivery_type=delivery_type,
        destination=destination,
        destination_key=receiver.get("key"),
        destination_host=receiver.get("host"),
        destination_prefix=receiver.get("prefix"),
        newest_first=params.get("order", "") == "newest",
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


def _destination(text: str, errors: dict[str, str]) -> dict[str, str]:
    """Which of the store's destination criteria ``text`` asks for, by name."""
    if not text:
        return {}
    if "://" in text:
        return {"prefix": text}
    try:
        key = normalise_destination_limit_key(text)
    except ValueError as exc:
        errors["destination"] = (
            f"“{text[:100]}” {exc}: type a host, host:port, the start of a URL, "
            "or <delivery type>:<destination>"
        )
        return {}
    # A bare host (an IPv6 one in brackets) has no port: any port of it matches.
    if ":" not in key or (key.startswith("[") and key.endswith("]")):
        return {"host": key}
    return {"key": key}


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
