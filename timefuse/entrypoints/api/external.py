"""The external-id operations' query: which sources they span, and pages of ``/all``.

By default an external id is looked up across every source the key acts for (two teams may
use the same external id); ``source`` narrows a lookup, a listing or a cancel to one source.

``/all`` lists the events of an external id newest first (by creation, then id), a page at a
time. A page resumes strictly after the last event of the one before (keyset), so events
created between two requests never shift a page; its cursor also carries how many events came
before, which sizes the read of the next page. The listing reaches the newest ``MAX_DEPTH``
events of an external id and no further (documented in docs/api.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.event import Event
from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api import listing
from timefuse.entrypoints.api.listing import MAX_LIMIT, int_param, invalid

DEFAULT_LIMIT = 100
_MAX_SOURCE = 100
# A page reads the events before it again (the store lists an external id from its newest):
# at most this many in all, so a deep page of a huge external id can't become a huge read.
MAX_DEPTH = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

LINK_HEADER: dict[str, Any] = {
    "description": 'The next page, as <path?query>; rel="next". Absent on the last page, and '
    f"after the newest {MAX_DEPTH} events of the external id (the listing reaches no deeper).",
    "schema": {"type": "string"},
}

SOURCE_PARAM: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": _MAX_SOURCE,
    "description": "Only this source's events (without it: every source the key acts for).",
}
PAGE_PARAMS: dict[str, Mapping[str, Any]] = {
    "source": SOURCE_PARAM,
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_LIMIT,
        "default": DEFAULT_LIMIT,
        "description": "Events per page.",
    },
    "cursor": {
        "type": "string",
        "description": "From the Link header (rel=next) of the previous page (opaque).",
    },
}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page of ``/all`` ended: its last event, and how many events came before."""

    created_at: datetime
    event_id: str
    seen: int

    def encode(self) -> str:
        micros = _micros(self.created_at)
        text = json.dumps([micros, self.event_id, self.seen], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        if len(text) > 1024:
            raise ValueError("too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            micros, event_id, seen = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("not a cursor") from None
        if not (isinstance(micros, int) and isinstance(event_id, str) and isinstance(seen, int)):
            raise ValueError("not a cursor")
        if seen < 0 or not event_id:
            raise ValueError("not a cursor")
        return cls(_EPOCH + micros * _MICROSECOND, event_id, seen)

    def precedes(self, event: Event) -> bool:
        """``event`` comes after this position, newest first (created_at, then id)."""
        return (_micros(event.created_at), event.id) < (_micros(self.created_at), self.event_id)


def _micros(moment: datetime) -> int:
    # Stores hand back UTC; a naive value is UTC that lost its zone on the way.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _MICROSECOND


def source_param(params: Mapping[str, str], errors: list[FieldError]) -> str | None:
    text = params.get("source")
    return None if text is None else listing.source_param(text, errors)


def narrowed(sources: frozenset[str] | None, source: str | None) -> frozenset[str] | None:
    """The sources a request spans: the key's, narrowed to ``source`` when given."""
    if source is None:
        return sources
    if sources is not None and source not in sources:
        return frozenset()
    return frozenset({source})


@dataclass(frozen=True, slots=True)
class PageRequest:
    source: str | None
    limit: int
    after: Position | None


def parse_page(params: Mapping[str, str]) -> PageRequest:
    errors: list[FieldError] = []
    source = source_param(params, errors)
    limit = int_param("limit", params.get("limit"), 1, MAX_LIMIT, errors)
    after = None
    text = params.get("cursor")
    if text is not None:
        try:
            after = Position.decode(text)
        except ValueError:
            errors.append(FieldError("cursor", "is not a cursor this API gave (see Link)"))
    if errors:
        raise invalid(errors)
    return PageRequest(source, DEFAULT_LIMIT if limit is None else limit, after)


Find = Callable[[int], Awaitable[list[Event]]]


async def read_page(find: Find, page: PageRequest) -> tuple[list[Event], Position | None]:
    """One page, and the position the next starts after (``None``: this is the last).

    ``find(n)`` returns the newest ``n`` events of the external id. The store has no
    position to start from, so a page is cut out of a read that starts at the newest: sized
    by how many events came before the cursor, doubled while events created meanwhile push
    the page further back.
    """
    want = page.limit + 1
    fetch = want + (page.after.seen if page.after is not None else 0)
    while True:
        fetch = min(fetch, MAX_DEPTH)
        found = await find(fetch)
        after = page.after
        rest = found if after is None else [e for e in found if after.precedes(e)]
        if len(rest) >= want or len(found) < fetch or fetch >= MAX_DEPTH:
            break
        fetch *= 2
    events = rest[: page.limit]
    if len(rest) <= page.limit or not events:
        return events, None
    last = events[-1]
    seen = len(found) - len(rest) + len(events)
    return events, Position(last.created_at, last.id, seen)
