"""The ingest buffer port: how accepted events travel from the API to the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timefuse.domain.event import Event


class BufferUnavailable(Exception):
    """The buffer could not durably accept the events; nothing may be promised to the client."""


class IngestBuffer(Protocol):
    """Accepts events durably: when :meth:`submit` returns, the events will reach the store."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the buffer can accept events; raise :class:`BufferUnavailable` otherwise."""

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        """Make ``events`` durable and return, per submitted id, the id the event is known by.

        A buffer that deduplicates later (on its way to the store) returns the submitted ids.
        Raises :class:`BufferUnavailable` if it can't make them durable.
        """
