"""Text as every store can keep it."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def storable(text: str | None) -> str | None:
    """``text`` with what a store can't hold replaced by U+FFFD: NUL (PostgreSQL's text refuses
    it) and unpaired surrogates (no UTF-8 encoding exists for them)."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text
