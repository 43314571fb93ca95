"""The listing cursor's text form, on which the API relies to answer a bad cursor with 400.

Stores return :class:`~timefuse.domain.cursor.Cursor` values; clients see only their encoded
text, and whatever they send back must decode to the same position or raise ValueError.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.cursor import MAX_ID_LENGTH, Cursor

_OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_INSTANTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=_OFFSETS
)
_IDS = st.text(min_size=1, max_size=MAX_ID_LENGTH).filter(str.isprintable)


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_VALID = Cursor(
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "0192f0c4-1c2b-7def-8123-456789abcdef"
)


def _with_unused_bits_set(text: str) -> str:
    # 11 bytes (a two-character id) fill 15 base64 characters but for 2 bits, which an
    # encoder leaves 0; a decoder that ignores them would read this text as the same cursor.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(text) == 15
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 0b01]


@given(_INSTANTS, _IDS)
def test_a_cursor_decodes_to_the_position_it_encodes(at: datetime, event_id: str) -> None:
    cursor = Cursor(at, event_id)
    text = cursor.encode()
    assert Cursor.decode(text) == cursor
    # URL-safe as is: base64url's alphabet, no padding.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)


@given(st.text(max_size=80))
def test_arbitrary_text_decodes_or_raises_value_error(text: str) -> None:
    try:
        cursor = Cursor.decode(text)
    except ValueError:
        return
    assert cursor.encode() == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!!",
        " " + _VALID.encode(),
        _VALID.encode() + "=",
        _VALID.encode() + "==",
        _with_unused_bits_set(Cursor(_VALID.scheduled_at, "ab").encode()),
        "A" * 5000,
        _encoded(b"\x01" + bytes(8)),  # no id
        _encoded(b"\x02" + bytes(8) + b"id"),  # an unknown version
        _encoded(b"\x01" + bytes(3)),  # too short for the time
        _encoded(b"\x01" + bytes(8) + b"\xff\xfe"),  # an id that isn't UTF-8
        _encoded(b"\x01" + bytes(8) + b"a\nb"),  # an id with a control character
        _encoded(b"\x01" + (2**62).to_bytes(8, "big") + b"id"),  # past datetime.max
        _encoded(b"\x01" + bytes(8) + b"x" * (MAX_ID_LENGTH + 1)),  # an id too long
    ],
)
def test_garbage_is_refused_with_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed cursor"):
        Cursor.decode(text)


def test_a_cursor_needs_an_aware_time_and_an_id() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Cursor(datetime(2026, 1, 1), "an-id")
    with pytest.raises(ValueError, match="characters"):
        Cursor(datetime(2026, 1, 1, tzinfo=UTC), "")


def test_a_cursor_id_has_1_to_255_printable_characters() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"^a cursor needs a timezone-aware scheduled_at$"):
        Cursor(datetime(2026, 1, 1), "an-id")
    with pytest.raises(ValueError, match=r"^a cursor's event id has 1 to 255 characters$"):
        Cursor(at, "x" * 256)
    with pytest.raises(ValueError, match=r"^a cursor's event id must be printable$"):
        Cursor(at, "an\nid")
    longest = Cursor(at, "x" * 255)
    assert Cursor.decode(longest.encode()) == longest


def test_a_cursors_text_never_changes_between_versions() -> None:
    # Pinned: clients keep a cursor while a newer timefuse is deployed, and the layout is
    # versioned (its first byte) so that a change is never silent.
    cursor = Cursor(datetime(2026, 1, 1, tzinfo=UTC), "0198-é")
    assert cursor.encode() == "AQAGR0hGIEAAMDE5OC3DqQ"
    before_1970 = Cursor(datetime(1960, 5, 1, 12, 0, 0, 1, tzinfo=UTC), "old")
    assert before_1970.encode() == "Af_-6n5XazABb2xk"
    assert Cursor.decode("Af_-6n5XazABb2xk") == before_1970
