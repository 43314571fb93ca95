"""What one listener holds: its limits, its connections, and the metrics about them."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge


class Sheddable(Protocol):
    def shed(self) -> None:
        """Close now: the listener needs the descriptor for a newer connection."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client connection may hold, before and while it sends a request."""

    max_connections: int
    header_timeout: float
    max_header_bytes: int
    body_timeout: float
    keepalive_seconds: int


def connection_cap(max_connections: int, open_files: int | None = None) -> int:
    """The connections a listener holds at most: the setting, or half the open-file limit.

    The other half is left for the store, outgoing deliveries and logs: a listener that takes
    every descriptor leaves the process unable to open anything, keyed requests included.
    """
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, open_files // 2))


class Connections:
    """The open connections of one listener, and which of them wait (oldest first).

    A connection waits while it holds no request for the application: before its headers are
    complete, between keep-alive requests, and while it drains after an early answer. Above the
    cap the connection that has waited longest is closed; a request in progress never is.
    """

    def __init__(self, cap: int, closed: Callable[[str], None] | None = None) -> None:
        self.cap = cap
        self.closed = closed if closed is not None else _ignore
        self._open: set[Sheddable] = set()
        self._waiting: dict[Sheddable, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, connection: Sheddable) -> bool:
        """Count ``connection`` in (waiting), closing waiting ones to stay within the cap."""
        self._open.add(connection)
        while len(self._open) > self.cap:
            victim = next(iter(self._waiting), None)
            if victim is None:
                self._open.discard(connection)
                return False
            self.leave(victim)
            victim.shed()
        self._waiting[connection] = None
        return True

    def waits(self, connection: Sheddable) -> None:
        if connection in self._open:
            self._waiting[connection] = None

    def works(self, connection: Sheddable) -> None:
        self._waiting.pop(connection, None)

    def leave(self, connection: Sheddable) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)


def _ignore(reason: str) -> None:
    return None


def count_closures(registry: CollectorRegistry, connections: Connections) -> Callable[[str], None]:
    """Export the listener's open connections and the connections its limits closed."""
    Gauge(
        "timefuse_http_connections", "Client connections open on the listener.", registry=registry
    ).set_function(lambda: len(connections))
    closed = Counter(
        "timefuse_http_connections_limited",
        "Connections the listener's limits closed or refused, by reason (header_timeout, "
        "body_timeout, headers_too_large, malformed, shed, refused).",
        ["reason"],
        registry=registry,
    )
    return lambda reason: closed.labels(reason).inc()
