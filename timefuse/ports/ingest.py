"""The ingest buffer port: how accepted events travel from the API to the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


# -- the consumer side: how the ingest consumer reads what the buffer made durable ----------


class StreamUnavailable(Exception):
    """The stream can't be read, committed or dead-lettered to now; the call may succeed later."""


@dataclass(frozen=True, slots=True)
class IngestRecord:
    """One record read from an ingest stream.

    ``event`` is the decoded event, or ``None`` when the record could not be decoded, in which
    case ``error`` says why. ``key`` and ``value`` are the record's bytes as read, kept so a
    dead letter carries the original. ``partition`` and ``offset`` place the record in the
    stream; the stream orders records within one partition.
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    event: Event | None
    error: str | None = None


class IngestStream(Protocol):
    """A durable, partitioned log of accepted events, read by a group of consumers.

    Records of one partition are read in order by one member of the group at a time. A record
    is read again (by this or another member) until it is committed, so a consumer that crashes
    between storing and committing only causes duplicates, which the store's dedup absorbs.
    """

    async def open(self) -> None:
        """Join the group; partitions are assigned as :meth:`fetch` is called."""

    async def close(self) -> None:
        """Leave the group; uncommitted records go to the next member."""

    async def fetch(self, max_records: int, timeout: float) -> list[IngestRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for them.

        Returns as soon as ``max_records`` are there, else what arrived within ``timeout``
        (possibly nothing). Raises :class:`StreamUnavailable` when the stream can't be read.
        """

    async def commit(self, records: Sequence[IngestRecord]) -> None:
        """Mark ``records`` (and every earlier record of their partitions) as done, durably.

        Call only once what they carry is stored. Raises :class:`StreamUnavailable` if the
        commit did not happen (the records will then be read again).
        """

    async def rewind(self, records: Sequence[IngestRecord]) -> None:
        """Have :meth:`fetch` return ``records`` (and what followed them) again."""

    async def dead_letter(self, record: IngestRecord, error: str) -> None:
        """Set ``record`` aside durably, with ``error``, so it no longer blocks its partition.

        Raises :class:`StreamUnavailable` if it could not be made durable.
        """

    async def lag(self) -> Mapping[int, int]:
        """Records not yet committed, per assigned partition, as last measured (may be empty)."""
