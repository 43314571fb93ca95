"""How deep a JSON text nests, found before it is decoded, without recursion.

msgspec decodes (and skips) nested values recursively, so a body nested ~1000 deep raises
RecursionError. The depth is found with C-speed operations (``bytes.split``, ``replace``,
``translate``) run a bounded number of times, in bounded memory: splitting a whole body at its
quotes would hold a piece per string (tens of bytes each, millions of them), so strings are
stripped chunk by chunk.
"""

from __future__ import annotations

# Brackets and braces nest alike; only their depth matters here.
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_CHUNK = 1 << 16


def without_strings(text: bytes) -> bytes:
    """``text`` with every string literal emptied (``"..."`` becomes ``""``)."""
    # Escaped backslashes first (so the string "\\" keeps its closing quote), then quotes:
    # every quote left opens or closes a string, and a chunk's quote count says whether it
    # ends inside one.
    text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    out = bytearray()
    start = 0
    while start < len(text):
        chunk = text[start : start + _CHUNK]
        if chunk.count(b'"') % 2 and start + len(chunk) < len(text):
            cut = chunk.rfind(b'"')
            if cut == 0:
                # One string longer than a chunk: skip straight to its closing quote.
                end = text.find(b'"', start + 1)
                if end < 0:
                    break
                out += b'""'
                start = end + 1
                continue
            chunk = chunk[:cut]
        # The chunk starts outside a string and holds whole strings: every other piece
        # between quotes is one's content.
        out += b'""'.join(chunk.split(b'"')[::2])
        start += len(chunk)
    return bytes(out)


def exceeds_depth(text: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``text``.

    Its copies of ``text`` shrink as it goes; no step holds more than a few of them.

    Exact for valid JSON. For invalid JSON (unmatched brackets) a ``False`` still bounds the
    depth a parser can reach before its first error to ``2 * limit``.
    """
    # Openers in the raw text (strings included) bound the depth from above: most bodies
    # stop here, without a copy.
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    brackets = without_strings(text).translate(_AS_BRACKETS, _NOT_BRACKETS)
    too_deep = b"[" * (limit + 1)
    # Each pass removes the innermost pairs: pass k removes the pairs enclosing k levels, so
    # a pass that still removes something after ``limit`` passes found a deeper pair.
    for _ in range(limit + 1):
        if too_deep in brackets:
            return True
        reduced = brackets.replace(b"[]", b"")
        if len(reduced) == len(brackets):
            # Only unmatched brackets are left ("]]][[["), and the run check above bounds them.
            return False
        brackets = reduced
    return True
