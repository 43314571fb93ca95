"""The ingest consumer: moves accepted events from the ingest stream into the store.

Each batch is written in one store transaction, then committed on the stream: never the other
way round, so a crash between the two only replays records the store deduplicates. A record
that can't be decoded or fails validation is dead-lettered; the rest of its batch is stored.
While the store is down the same batch is retried with backoff, and nothing is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from timefuse.domain.event import Event, is_event_id
from timefuse.domain.validation import (
    SubmissionLimits,
    ValidationFailed,
    build_event,
    submission_fields,
)
from timefuse.ports.ingest import IngestRecord, IngestStream, StreamUnavailable
from timefuse.ports.store import StoreError, StoreRefused
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.ingest")


@dataclass(frozen=True, slots=True)
class IngestSettings:
    batch_size: int = 1000
    batch_timeout_seconds: float = 0.05
    retry_base_seconds: float = 0.2
    retry_cap_seconds: float = 5.0
    # Retrying one batch in place longer than this hands it back to the stream and reads it
    # again: the stream's client must be called now and then to keep its group membership
    # (Kafka's max.poll.interval.ms, 5 min by default).
    hold_seconds: float = 60.0
    lag_every_seconds: float = 5.0


Valid = tuple[IngestRecord, Event]
Poison = tuple[IngestRecord, str]


class IngestConsumer:
    def __init__(
        self,
        *,
        stream: IngestStream,
        store: Store,
        metrics: Metrics,
        settings: IngestSettings | None = None,
        limits: SubmissionLimits | None = None,
        wakeup: DueSignal | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._store = store
        self._metrics = metrics
        self._settings = settings or IngestSettings()
        self._limits = limits or SubmissionLimits()
        self._wakeup = wakeup
        self._now = monotonic
        self._reported_partitions: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the stream is opened here and closed on the way out."""
        if not await self._open(stop):
            return
        lag = asyncio.create_task(self._report_lag(stop), name="timefuse-ingest-lag")
        try:
            await self._consume(stop)
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            await self._stream.close()

    async def _open(self, stop: asyncio.Event) -> bool:
        failures = 0
        while not stop.is_set():
            try:
                await self._stream.open()
                return True
            except StreamUnavailable as exc:
                failures += 1
                log.warning("ingest stream unavailable; retrying", error=str(exc))
                await _sleep_or_stop(self._backoff(failures), stop)
        return False

    async def _consume(self, stop: asyncio.Event) -> None:
        # One batch at a time: read, write, commit. Reading the next batch while writing
        # this one was measured and gained nothing: librdkafka prefetches on its own threads,
        # so a read returns what is already here, and the time goes to decoding and writing.
        while not stop.is_set():
            records = await self._fetch(stop)
            if not records or await self.process(records, stop) or stop.is_set():
                continue
            # Held too long: give the batch back and read it again, which also keeps this
            # member in its group; if it can't be given back, hold on until it is stored.
            if await self._rewind(records):
                log.info("ingest batch given back to the stream", records=len(records))
            else:
                await self._process(records, stop, hold_seconds=None)

    async def _fetch(self, stop: asyncio.Event) -> list[IngestRecord]:
        settings = self._settings
        try:
            return await self._stream.fetch(settings.batch_size, settings.batch_timeout_seconds)
        except StreamUnavailable as exc:
            log.warning("reading the ingest stream failed; retrying", error=str(exc))
            await _sleep_or_stop(settings.retry_cap_seconds, stop)
            return []

    async def process(self, records: Sequence[IngestRecord], stop: asyncio.Event) -> bool:
        """Store ``records``, dead-letter their poison, commit; ``True`` once all of it is done.

        Retries with backoff while the store or the stream is unavailable, for up to the
        settings' ``hold_seconds``. ``False`` when it gave up (or ``stop`` was set): nothing of
        ``records`` was committed.
        """
        return await self._process(records, stop, self._settings.hold_seconds)

    async def _process(
        self, records: Sequence[IngestRecord], stop: asyncio.Event, hold_seconds: float | None
    ) -> bool:
        valid, poison = self._sort(records)
        failures = 0
        held_since = self._now()
        while True:
            try:
                await self._store_and_dead_letter(valid, poison)
                break
            except (StoreError, StreamUnavailable) as exc:
                # Anything but a refusal of an event's own values (handled per event below) is
                # about the store's state: retry, never dead-letter, never commit.
                failures += 1
                self._metrics.ingest_store_retries.inc()
                log.warning(
                    "ingest batch not stored; retrying", error=str(exc), records=len(records)
                )
                held = self._now() - held_since
                if stop.is_set() or (hold_seconds is not None and held > hold_seconds):
                    return False
                await _sleep_or_stop(self._backoff(failures), stop)
        self._metrics.ingest_batches.inc()
        await self._commit(records)
        return True

    def _sort(self, records: Sequence[IngestRecord]) -> tuple[list[Valid], list[Poison]]:
        valid: list[Valid] = []
        poison: list[Poison] = []
        for record in records:
            event = record.event
            if event is None:
                poison.append((record, record.error or "undecodable record"))
            elif (reason := self._invalid(event)) is not None:
                poison.append((record, reason))
            else:
                valid.append((record, event))
        return valid, poison

    def _invalid(self, event: Event) -> str | None:
        """Why ``event`` breaks the submission rules as they stood when it was accepted."""
        if not is_event_id(event.id):
            return f"invalid event: id {event.id!r} is not an event id"
        fields = submission_fields(event)
        # Judged at its acceptance time, so a backlog read hours later is still valid. Whether
        # the delivery type exists is left to the dispatcher: an ingest process need not load
        # every plugin the API does.
        try:
            build_event(fields, event_id=event.id, now=event.created_at, limits=self._limits)
        except ValidationFailed as exc:
            return f"invalid event: {exc}"
        except (ArithmeticError, ValueError) as exc:
            # Dates at the edge of datetime's range (year 1, year 9999) overflow the rules'
            # arithmetic: the record is poison, not a reason to stop consuming its partition.
            return f"invalid event: {type(exc).__name__}: {exc}"
        return None

    async def _store_and_dead_letter(self, valid: list[Valid], poison: list[Poison]) -> None:
        started = time.perf_counter()
        refused = await self._insert([event for _, event in valid])
        if valid:
            self._metrics.ingest_write_seconds.observe(time.perf_counter() - started)
        if refused:
            records = {event.id: record for record, event in valid}
            poison = poison + [(records[event.id], reason) for event, reason in refused]
        if poison:
            await self._dead_letter(poison)

    async def _insert(self, events: list[Event]) -> list[tuple[Event, str]]:
        """Insert in one transaction; return the events the store refused, with its reason.

        A refusal of values (a value the database rejects) fails the whole transaction;
        halving the batch until the culprit is alone keeps its neighbours, and only an event
        refused on its own is dead-lettered. Any other error is raised: the store's state, not
        the events, is at fault.
        """
        if not events:
            return []
        try:
            ids = await self._store.insert_many(events)
        except StoreRefused as exc:
            if len(events) == 1:
                return [(events[0], f"store refused the event: {exc}")]
            middle = len(events) // 2
            return await self._insert(events[:middle]) + await self._insert(events[middle:])
        self._stored(events, ids)
        return []

    def _stored(self, events: list[Event], ids: Mapping[str, str]) -> None:
        self._metrics.ingest_persisted.inc(len(events))
        duplicates = sum(1 for event in events if ids.get(event.id, event.id) != event.id)
        if duplicates:
            self._metrics.ingest_duplicates.inc(duplicates)
        if self._wakeup is not None:
            # Only wakes the dispatcher when one is due before it planned to look again.
            self._wakeup.notify(min(event.next_attempt_at for event in events))

    async def _dead_letter(self, poison: list[Poison]) -> None:
        # Every dead letter is acknowledged before the batch is committed: a record is never
        # committed past unless it is in the store or in the dead letter topic.
        await asyncio.gather(
            *(self._stream.dead_letter(record, reason) for record, reason in poison)
        )
        self._metrics.ingest_dead_lettered.inc(len(poison))
        for record, reason in poison:
            log.warning(
                "ingest record dead-lettered",
                partition=record.partition,
                offset=record.offset,
                error=reason,
            )

    async def _commit(self, records: Sequence[IngestRecord]) -> None:
        try:
            await self._stream.commit(records)
        except StreamUnavailable as exc:
            # Stored already: reading the records again only makes duplicates the store drops.
            log.warning("ingest commit failed; records will be read again", error=str(exc))

    async def _rewind(self, records: Sequence[IngestRecord]) -> bool:
        try:
            await self._stream.rewind(records)
        except StreamUnavailable as exc:
            log.warning("ingest rewind failed; retrying the batch in place", error=str(exc))
            return False
        return True

    async def _report_lag(self, stop: asyncio.Event) -> None:
        gauge = self._metrics.ingest_lag
        while not stop.is_set():
            await _sleep_or_stop(self._settings.lag_every_seconds, stop)
            lag = {str(partition): value for partition, value in (await self._stream.lag()).items()}
            for partition in self._reported_partitions - lag.keys():
                gauge.remove(partition)
            for partition, value in lag.items():
                gauge.labels(partition).set(value)
            self._reported_partitions = set(lag)

    def _backoff(self, failures: int) -> float:
        settings = self._settings
        return min(settings.retry_cap_seconds, settings.retry_base_seconds * 2.0 ** (failures - 1))


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
