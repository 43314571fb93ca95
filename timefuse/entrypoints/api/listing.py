"""The query string of ``GET /api/v1/events``: filters, page size and cursor."""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from timefuse.domain.status import EventStatus
from timefuse.domain.validation import FieldError, parse_instant
from timefuse.entrypoints.api.errors import VALIDATION_FAILED, ApiError
from timefuse.ports.store import Cursor, EventQuery

E = TypeVar("E", bound=enum.StrEnum)
P = TypeVar("P")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_SOURCE = 100

QUERY_PARAMS: dict[str, Mapping[str, Any]] = {
    "status": {
        "type": "string",
        "enum": [status.value for status in EventStatus],
        "description": "Only events in this status.",
    },
    "source": {
        "type": "string",
        "minLength": 1,
        "maxLength": _MAX_SOURCE,
        "description": "Only events of this source (none, for a source the key doesn't act "
        "for); without it, every source the key acts for.",
    },
    "scheduled_from": {
        "type": "string",
        "format": "date-time",
        "description": "Only events scheduled at or after this instant (ISO-8601, offset).",
    },
    "scheduled_to": {
        "type": "string",
        "format": "date-time",
        "description": "Only events scheduled before this instant (ISO-8601, offset).",
    },
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_LIMIT,
        "default": DEFAULT_LIMIT,
        "description": "Events per page.",
    },
    "cursor": {
        "type": "string",
        "description": "The next_cursor of the previous page (opaque).",
    },
}


@dataclass(frozen=True, slots=True)
class Listing:
    """What one listing request asks for."""

    query: EventQuery
    limit: int
    after: Cursor | None


def parse_listing(params: Mapping[str, str]) -> Listing:
    """The listing ``params`` ask for; 400 naming every bad parameter."""
    errors: list[FieldError] = []
    status = enum_param("status", params.get("status"), EventStatus, errors)
    source = _source(params.get("source"), errors)
    scheduled_from = instant_param("scheduled_from", params.get("scheduled_from"), errors)
    scheduled_to = instant_param("scheduled_to", params.get("scheduled_to"), errors)
    check_window(scheduled_from, scheduled_to, errors)
    limit = int_param("limit", params.get("limit"), 1, MAX_LIMIT, errors)
    after = cursor_param(params.get("cursor"), Cursor.decode, errors)
    if errors:
        raise invalid(errors)
    query = EventQuery(
        status=status,
        sources=None if source is None else [source],
        scheduled_from=scheduled_from,
        scheduled_to=scheduled_to,
    )
    return Listing(query, DEFAULT_LIMIT if limit is None else limit, after)


def invalid(errors: list[FieldError], what: str = "query") -> ApiError:
    """400 naming each bad parameter or field."""
    named = "; ".join(f"{error.field} {error.message}" for error in errors)
    return ApiError(400, VALIDATION_FAILED, f"invalid {what}: {named}", errors=errors)


def int_param(
    name: str, text: str | None, low: int, high: int, errors: list[FieldError]
) -> int | None:
    if text is None:
        return None
    # Digits only: int() would also take " 7", "+7" and "7_000".
    if not text.isascii() or not text.isdigit() or len(text) > len(str(high)) + 2:
        errors.append(FieldError(name, f"must be an integer from {low} to {high}"))
        return None
    value = int(text)
    if not low <= value <= high:
        errors.append(FieldError(name, f"must be an integer from {low} to {high}"))
        return None
    return value


def instant_param(name: str, text: str | None, errors: list[FieldError]) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError as exc:
        errors.append(FieldError(name, str(exc)))
        return None


def check_window(
    scheduled_from: datetime | None, scheduled_to: datetime | None, errors: list[FieldError]
) -> None:
    if scheduled_from is not None and scheduled_to is not None and scheduled_to < scheduled_from:
        errors.append(FieldError("scheduled_to", "must not be before scheduled_from"))


def _source(text: str | None, errors: list[FieldError]) -> str | None:
    return None if text is None else source_param(text, errors)


def has_control_characters(text: str) -> bool:
    """The submission rule's test (timefuse.domain.validation, kept private there; a property
    test checks the two agree): a C0/C1 control or a format character."""
    if text.isprintable():
        return False
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def source_param(text: str, errors: list[FieldError]) -> str:
    """A source named in a query, checked as submissions check theirs."""
    if not text.strip():
        errors.append(FieldError("source", "must not be blank"))
    elif len(text) > _MAX_SOURCE:
        errors.append(FieldError("source", f"must be at most {_MAX_SOURCE} characters"))
    elif has_control_characters(text):
        # No source holds one (submissions refuse them), and PostgreSQL can't take a NUL.
        errors.append(FieldError("source", "must not contain control characters"))
    return text


def enum_param(name: str, text: str | None, kind: type[E], errors: list[FieldError]) -> E | None:
    """``text`` as a member of ``kind``, in any case (``pending`` is ``PENDING``)."""
    if text is None:
        return None
    try:
        return kind(text.upper())
    except ValueError:
        names = ", ".join(member.value for member in kind)
        errors.append(FieldError(name, f"must be one of {names}"))
        return None


def cursor_param(
    text: str | None, decode: Callable[[str], P], errors: list[FieldError]
) -> P | None:
    """The position a ``cursor`` parameter encodes; ``decode`` raises ValueError for any other."""
    if text is None:
        return None
    try:
        return decode(text)
    except ValueError:
        errors.append(FieldError("cursor", "is not a cursor this API gave (use next_cursor)"))
        return None
