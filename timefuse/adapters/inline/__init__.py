"""The inline ingest buffer: the API writes accepted events straight to the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timefuse.domain.event import Event
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import Lifecycle, StoreError, StoreRefused, Submissions


class _Store(Submissions, Lifecycle, Protocol):
    pass


class InlineIngestBuffer:
    """Durable when :meth:`submit` returns because the store's transaction has committed."""

    def __init__(self, store: _Store) -> None:
        self._store = store

    async def open(self) -> None:
        """The store is opened by its owner; nothing of its own to open."""

    async def close(self) -> None:
        """Nothing of its own to close."""

    async def ping(self) -> None:
        try:
            await self._store.ping()
        except StoreError as exc:
            raise BufferUnavailable(f"event store unavailable: {exc}") from exc

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        try:
            return await self._store.insert_many(events)
        except StoreRefused:
            raise  # the events' own values, not the buffer, are at fault
        except StoreError as exc:
            raise BufferUnavailable(f"event store unavailable: {exc}") from exc
