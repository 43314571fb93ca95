"""Which configured entry a destination URL falls under: a URL prefix, a host:port, or a host.

Hosts are compared in one normal form: lower-case, IDNA-encoded, without a trailing dot, with
the scheme's default port made explicit (``https://API.example.com/x`` is host
``api.example.com``, port 443). The most specific entry wins: a URL prefix (the longest path
first) over a host:port over a bare host, which matches the host on any port.

This normaliser is local to http delivery's per-destination settings; it follows the
canonical destination form (host normalised, default port explicit) used for destination keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from yarl import URL

__all__ = ["DestinationMatch", "MatchTable", "parse_match"]

DEFAULT_PORTS = {"http": 80, "https": 443}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DestinationMatch:
    """One configured match, normalised. ``port`` is ``None`` for a bare host (any port);
    ``scheme`` and ``path`` are set for URL prefixes only."""

    text: str
    host: str
    port: int | None = None
    scheme: str | None = None
    path: str | None = None

    @property
    def key(self) -> str:
        """The normal form: two matches with the same key are the same match."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.scheme is not None:
            return f"{self.scheme}://{host}:{self.port}{self.path}"
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def specificity(self) -> tuple[int, int]:
        if self.path is not None:
            return 2, len(self.path)
        return (1 if self.port is not None else 0), 0

    def matches(self, scheme: str, port: int, path: str) -> bool:
        """Whether a URL on this match's host, with this scheme, port and path, falls under it."""
        if self.port is not None and port != self.port:
            return False
        if self.scheme is None or self.path is None:
            return True
        return scheme == self.scheme and _under(path, self.path)


def _under(path: str, prefix: str) -> bool:
    # "/hooks" covers "/hooks" and "/hooks/x" but not "/hooks-admin": a prefix ends at a
    # path segment, unless it ends with "/" itself.
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def normal_host(raw_host: str) -> str:
    return raw_host.lower().removesuffix(".")


def parse_match(text: str) -> DestinationMatch:
    """A configured match in normal form.

    :raises ValueError: the text is not a host, a host:port or an http(s) URL prefix; the
        message says why.
    """
    stripped = text.strip()
    if not stripped or any(ch.isspace() for ch in stripped):
        raise ValueError("must be a host, a host:port, or an http(s) URL prefix, without spaces")
    if "://" in stripped:
        return _url_prefix(text, stripped)
    if stripped.count(":") > 1 and not stripped.startswith("["):
        raise ValueError("an IPv6 address must be in brackets: [2001:db8::1]:443")
    if "/" in stripped or "@" in stripped:
        raise ValueError("a URL prefix needs its scheme (https://...); a host has no path")
    url = _parse(f"http://{stripped}/")
    return DestinationMatch(text, _host(url), url.explicit_port)


def _url_prefix(text: str, stripped: str) -> DestinationMatch:
    url = _parse(stripped)
    if url.scheme not in DEFAULT_PORTS:
        raise ValueError("a URL prefix must start with http:// or https://")
    if url.user is not None or url.password is not None:
        raise ValueError("a URL prefix must not hold a user or password")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError("a URL prefix ends at its path: no ?query or #fragment")
    port = url.port if url.port is not None else DEFAULT_PORTS[url.scheme]
    return DestinationMatch(text, _host(url), port, url.scheme, url.raw_path or "/")


def _parse(text: str) -> URL:
    try:
        url = URL(text)
        url.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a valid host or URL ({exc})") from None
    except IndexError:  # yarl, on some malformed authorities ("http://[]@")
        raise ValueError("is not a valid host or URL") from None
    if not url.raw_host:
        raise ValueError("has no host")
    return url


def _host(url: URL) -> str:
    assert url.raw_host is not None
    host = normal_host(url.raw_host)
    if not host or host.startswith(".") or ".." in host:
        raise ValueError(f"has an invalid host {host!r}")
    return host


class MatchTable(Generic[T]):
    """Entries by match; :meth:`find` gives the most specific entry a URL falls under.

    :raises ValueError: from the constructor, when two entries have the same normal form.
    """

    def __init__(self, entries: Iterable[tuple[DestinationMatch, T]]) -> None:
        by_host: dict[str, list[tuple[DestinationMatch, T]]] = {}
        seen: dict[str, str] = {}
        for match, value in entries:
            if match.key in seen:
                raise ValueError(
                    f"{match.text!r} and {seen[match.key]!r} are the same destination ({match.key})"
                )
            seen[match.key] = match.text
            by_host.setdefault(match.host, []).append((match, value))
        for listed in by_host.values():
            listed.sort(key=lambda item: item[0].specificity, reverse=True)
        self._by_host = by_host

    def __len__(self) -> int:
        return sum(len(listed) for listed in self._by_host.values())

    def find(self, url: URL) -> T | None:
        if url.raw_host is None or url.scheme not in DEFAULT_PORTS:
            return None
        listed = self._by_host.get(normal_host(url.raw_host))
        if not listed:
            return None
        port = url.port if url.port is not None else DEFAULT_PORTS[url.scheme]
        path = url.raw_path or "/"
        for match, value in listed:
            if match.matches(url.scheme, port, path):
                return value
        return None
