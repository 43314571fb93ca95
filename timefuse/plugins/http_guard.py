"""Which destinations http delivery accepts, and the connector it reaches them through.

This module is the seam for the SSRF guard (refusing loopback, private, link-local and metadata
addresses), which is not implemented yet. It will hook in at two places, both here:
``parse_destination`` for hosts that are IP literals (aiohttp never passes those to a resolver),
and ``build_connector`` for a resolver that checks every address a name resolves to, at
connection time, so DNS rebinding cannot slip past a check made at submission.
"""

from __future__ import annotations

import functools
import re

import aiohttp
from yarl import URL

from timefuse.config import Settings

URL_FORM = "must be an absolute http:// or https:// URL"

_SCHEMES = frozenset({"http", "https"})
# yarl (like browsers) silently drops tabs and newlines and strips spaces, so
# "http://host\r\nX-Injected: 1/" would become another host: refuse them instead of guessing.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")
# One DNS label once IDNA-encoded; "_" is tolerated because internal names use it.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_MAX_HOST_LENGTH = 253

# Idle keep-alive connections are dropped before the 5 s idle timeout of common servers
# (uvicorn, Node): a POST is never retried by aiohttp, so reusing a connection the receiver is
# closing at that instant would cost a spurious failed attempt.
_KEEPALIVE_SECONDS = 4.0
_DNS_CACHE_SECONDS = 60


def validate_destination(destination: str) -> str | None:
    """``None`` when http delivery can post to ``destination``, else the reason it can't."""
    parsed = parse_destination(destination)
    return parsed if isinstance(parsed, str) else None


# Cached because deliver() parses every event's destination on the hot path, and most events
# go to a few webhooks; both results (a URL or a reason) are immutable.
@functools.lru_cache(maxsize=4096)
def parse_destination(destination: str) -> URL | str:
    """The destination as a URL, or the reason it is not one http delivery can use."""
    if _UNSAFE_CHARACTERS.search(destination):
        return "must not contain spaces or control characters"
    try:
        url = URL(destination)
        port = url.port
    except ValueError as exc:
        return f"{URL_FORM} ({exc})"
    if url.scheme not in _SCHEMES or not url.raw_host:
        return URL_FORM
    if not _is_valid_host(url.raw_host):
        return f"has an invalid host name {url.raw_host!r}"
    if port is None or not 1 <= port <= 65535:
        return "has an invalid port (must be 1 to 65535)"
    return url


def _is_valid_host(raw_host: str) -> bool:
    if ":" in raw_host:
        return True  # an IPv6 literal, which yarl has already checked
    if len(raw_host) > _MAX_HOST_LENGTH:
        return False
    labels = raw_host.removesuffix(".").split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


def build_connector(settings: Settings) -> aiohttp.TCPConnector:
    """The connection pool behind the one http delivery session."""
    return aiohttp.TCPConnector(
        # The dispatcher already caps deliveries in flight at `concurrency`, so this limit is a
        # backstop and never makes a delivery queue. There is no per-host limit on purpose:
        # per-destination caps belong to the dispatcher, and a wait for a pooled connection
        # here would be charged to the attempt's total timeout and turn into spurious retries.
        limit=settings.concurrency,
        limit_per_host=0,
        ttl_dns_cache=_DNS_CACHE_SECONDS,
        keepalive_timeout=_KEEPALIVE_SECONDS,
    )
