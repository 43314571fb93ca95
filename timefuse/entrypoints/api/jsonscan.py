"""Cheap looks at a JSON text before it is decoded: how deep it nests, how many items it holds.

Both answers must come before decoding, and without recursion: msgspec decodes (and skips)
nested values recursively, so a body nested ~1000 deep raises RecursionError, and decoding a
10 MB array of ``{}`` builds millions of objects (hundreds of MB) before a length check could
refuse it. Everything here runs in C (``re``, ``bytes.replace``, ``bytes.count``) a bounded number
of times, never a Python loop per byte.
"""

from __future__ import annotations

import re

# A string literal, escapes included: what is inside one nests nothing and separates nothing.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# Brackets and braces nest alike; only their depth matters here.
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# A container holding no other container, with its content (commas included).
_INNERMOST = re.compile(rb"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")


def without_strings(text: bytes) -> bytes:
    # Each string becomes "": still one value (an array item), with nothing inside.
    return _STRING.sub(b'""', text)


def exceeds_depth(text: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``text``.

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


def count_items(array: bytes) -> int:
    """How many items a (syntactically valid) JSON array text holds.

    Call it only on text whose depth is known to be bounded: it takes one pass per level.
    """
    inner = without_strings(array).strip()[1:-1]
    removed = 1
    while removed:
        # A container becomes one scalar: still an item of whatever holds it.
        inner, removed = _INNERMOST.subn(b"0", inner)
    if not inner.strip():
        return 0
    return inner.count(b",") + 1
