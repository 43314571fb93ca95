"""Positions in the listing order of events, and the opaque text clients carry between pages.

Listings are ordered by ``(scheduled_at, id)``; a page ends at a position and the next page
starts strictly after it (keyset pagination), so events inserted or changed between two
requests never shift a page, and no event is returned twice or skipped.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Leads the encoded bytes, so a later layout can be told apart from this one.
_VERSION = b"\x01"
_MICROS_BYTES = 8
MAX_ID_LENGTH = 255
# Version byte + micros + an id of MAX_ID_LENGTH characters of up to 4 UTF-8 bytes each,
# base64-encoded: anything longer is refused before it is decoded.
_MAX_TEXT = (1 + _MICROS_BYTES + 4 * MAX_ID_LENGTH) * 4 // 3 + 4
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position of one event in the order ``(scheduled_at, id)``; a page resumes after it.

    :meth:`encode` gives the opaque text handed to clients (base64url, no padding);
    :meth:`decode` reads it back and raises :class:`ValueError` for any text it did not make.
    """

    scheduled_at: datetime
    event_id: str

    def __post_init__(self) -> None:
        if self.scheduled_at.tzinfo is None:
            raise ValueError("a cursor needs a timezone-aware scheduled_at")
        if not self.event_id or len(self.event_id) > MAX_ID_LENGTH:
            raise ValueError(f"a cursor's event id has 1 to {MAX_ID_LENGTH} characters")
        if not self.event_id.isprintable():
            raise ValueError("a cursor's event id must be printable")

    def encode(self) -> str:
        micros = (self.scheduled_at - _EPOCH) // _MICROSECOND
        raw = _VERSION + micros.to_bytes(_MICROS_BYTES, "big", signed=True)
        raw += self.event_id.encode("utf-8")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor ``text`` encodes; :class:`ValueError` if it isn't one :meth:`encode` made."""
        if not isinstance(text, str) or len(text) > _MAX_TEXT or not _BASE64URL.fullmatch(text):
            raise ValueError("malformed cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("malformed cursor") from None
        if len(raw) <= 1 + _MICROS_BYTES or raw[:1] != _VERSION:
            raise ValueError("malformed cursor")
        micros = int.from_bytes(raw[1 : 1 + _MICROS_BYTES], "big", signed=True)
        try:
            cursor = cls(_EPOCH + micros * _MICROSECOND, raw[1 + _MICROS_BYTES :].decode("utf-8"))
        except (OverflowError, ValueError):  # UnicodeDecodeError is a ValueError
            raise ValueError("malformed cursor") from None
        # Base64 admits several texts for the same bytes (unused trailing bits): accept only
        # the one encode() gives, so a cursor has exactly one spelling.
        if cursor.encode() != text:
            raise ValueError("malformed cursor")
        return cursor
