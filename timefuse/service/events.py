"""Use cases the API offers: submit, look up, cancel, count."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from timefuse.domain.event import Event, new_event_id
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import (
    FieldError,
    SubmissionLimits,
    ValidationFailed,
    build_event,
)
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.ingest import IngestBuffer
from timefuse.ports.store import CancelResult, EventStore
from timefuse.service.metrics import Metrics
from timefuse.service.wakeup import DueSignal

STATISTICS_TTL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    external_job_id: str | None
    reason: str
    errors: list[FieldError]


@dataclass(frozen=True, slots=True)
class BatchResult:
    accepted: list[tuple[int, str]]
    rejected: list[Rejection]


class EventService:
    def __init__(
        self,
        *,
        buffer: IngestBuffer,
        store: EventStore,
        registry: DeliveryRegistry,
        clock: Clock,
        metrics: Metrics,
        limits: SubmissionLimits | None = None,
        wakeup: DueSignal | None = None,
    ) -> None:
        self._buffer = buffer
        self._store = store
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._limits = limits or SubmissionLimits()
        self._wakeup = wakeup
        self._statistics: tuple[float, dict[str, int]] | None = None

    def build(self, fields: Mapping[str, object]) -> Event:
        """Validate one submission; :class:`ValidationFailed` names every bad field."""
        now = self._clock.now()
        event = build_event(fields, event_id=new_event_id(now), now=now, limits=self._limits)
        reason = self._registry.check_destination(event.delivery_type, event.destination)
        if reason is not None:
            known = self._registry.get(event.delivery_type) is not None
            raise ValidationFailed(
                [FieldError("destination" if known else "delivery_type", reason)]
            )
        return event

    async def submit(self, fields: Mapping[str, object]) -> str:
        """Accept one event durably and return its id (an earlier twin's id if deduplicated)."""
        try:
            event = self.build(fields)
        except ValidationFailed:
            self._metrics.rejected.inc()
            raise
        ids = await self._accept([event])
        return ids[event.id]

    async def submit_batch(self, items: Sequence[Mapping[str, object]]) -> BatchResult:
        """Accept the valid events of a batch together; report the invalid ones by index."""
        events: list[tuple[int, Event]] = []
        rejected: list[Rejection] = []
        for index, fields in enumerate(items):
            try:
                events.append((index, self.build(fields)))
            except ValidationFailed as exc:
                external = fields.get("external_job_id")
                rejected.append(
                    Rejection(
                        index,
                        external if isinstance(external, str) else None,
                        str(exc),
                        exc.errors,
                    )
                )
        if rejected:
            self._metrics.rejected.inc(len(rejected))
        ids = await self._accept([event for _, event in events]) if events else {}
        return BatchResult([(index, ids[event.id]) for index, event in events], rejected)

    async def _accept(self, events: list[Event]) -> dict[str, str]:
        ids = await self._buffer.submit(events)
        for event in events:
            self._metrics.received.labels(event.delivery_type).inc()
        if self._wakeup is not None:
            self._wakeup.notify(min(event.next_attempt_at for event in events))
        self._statistics = None
        return ids

    async def get(self, event_id: str) -> Event | None:
        return await self._store.get(event_id)

    async def find_by_external_id(self, external_job_id: str) -> list[Event]:
        return await self._store.find_by_external_id(external_job_id)

    async def cancel(self, event_id: str) -> CancelResult:
        result = await self._store.cancel(event_id)
        if result is CancelResult.CANCELLED:
            self._metrics.cancelled.inc()
            self._statistics = None
        return result

    async def cancel_by_external_id(self, external_job_id: str) -> int:
        count = await self._store.cancel_by_external_id(external_job_id)
        if count:
            self._metrics.cancelled.inc(count)
            self._statistics = None
        return count

    async def statistics(self) -> dict[str, int]:
        """Events per status, cached briefly so a busy dashboard can't turn into a scan loop."""
        cached = self._statistics
        if cached is not None and time.monotonic() - cached[0] < STATISTICS_TTL_SECONDS:
            return cached[1]
        counts = await self._store.count_by_status()
        result = {status.value: counts.get(status, 0) for status in EventStatus}
        result["TOTAL"] = sum(counts.values())
        self._statistics = (time.monotonic(), result)
        return result
