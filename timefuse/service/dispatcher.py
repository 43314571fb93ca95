"""The dispatcher: claims due events, delivers them concurrently, writes outcomes back."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind, excerpt
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.store import AttemptRecord, EventStore, OutcomeUpdate, StoreError
from timefuse.service.metrics import Metrics
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.dispatcher")

Observer = Callable[[Event, int, DeliveryOutcome, str], None]

# Outcomes are written back in batches: one transaction per flush instead of one per event.
FLUSH_INTERVAL_SECONDS = 0.02
STORE_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    worker_id: str
    batch_size: int = 500
    concurrency: int = 1000
    lease_seconds: float = 60.0
    poll_interval_seconds: float = 1.0
    shutdown_timeout_seconds: float = 10.0
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)


class Dispatcher:
    def __init__(
        self,
        *,
        store: EventStore,
        registry: DeliveryRegistry,
        clock: Clock,
        metrics: Metrics,
        settings: DispatcherSettings,
        wakeup: DueSignal | None = None,
        observer: Observer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._wakeup = wakeup or DueSignal()
        self._observer = observer
        self._rng = rng or random.Random()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._outcomes: list[OutcomeUpdate] = []
        self._outcomes_ready = asyncio.Event()

    @property
    def wakeup(self) -> DueSignal:
        return self._wakeup

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then shut down gracefully."""
        flusher = asyncio.create_task(self._flush_loop(stop), name="timefuse-outcome-flusher")
        try:
            await self._claim_loop(stop)
        finally:
            await self._drain()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush_until_written()

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            capacity = self._settings.concurrency - len(self._in_flight)
            if capacity <= 0:
                await _first_of(self._slot_freed.wait(), stop.wait())
                self._slot_freed.clear()
                continue
            limit = min(self._settings.batch_size, capacity)
            claimed = await self._claim(limit)
            if claimed is None:
                await _first_of(asyncio.sleep(STORE_RETRY_SECONDS), stop.wait())
                continue
            for event in claimed:
                self._start(event)
            if len(claimed) < limit:
                await self._idle(stop)

    async def _claim(self, limit: int) -> list[Event] | None:
        started = time.perf_counter()
        try:
            claimed = await self._store.claim_due(
                self._settings.worker_id, limit, self._settings.lease_seconds
            )
        except StoreError as exc:
            log.warning("claim failed; retrying", error=str(exc))
            return None
        self._metrics.claim_latency.observe(time.perf_counter() - started)
        self._metrics.claimed.observe(len(claimed))
        return claimed

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until the next due time, a wake-up, or the poll interval, whichever is first."""
        timeout = self._settings.poll_interval_seconds
        try:
            next_due = await self._store.next_due_at()
        except StoreError:
            next_due = None
        if next_due is not None:
            timeout = min(timeout, (next_due - self._clock.now()).total_seconds())
        if timeout <= 0:
            return
        self._wakeup.plan(next_due)
        await _first_of(self._wakeup.wait(timeout), stop.wait())

    def _start(self, event: Event) -> None:
        task = asyncio.create_task(self._deliver(event), name=f"timefuse-deliver-{event.id}")
        self._in_flight[event.id] = task
        self._metrics.in_flight.inc()
        task.add_done_callback(lambda _: self._finished(event.id))

    def _finished(self, event_id: str) -> None:
        self._in_flight.pop(event_id, None)
        self._metrics.in_flight.dec()
        self._slot_freed.set()

    async def _deliver(self, event: Event) -> None:
        started_at = self._clock.now()
        started = time.perf_counter()
        outcome = await self._attempt(event)
        duration = time.perf_counter() - started
        now = self._clock.now()
        update = self._decide(event, outcome, started_at, duration, now)
        self._observe(event, outcome, update, duration, now)
        self._outcomes.append(update)
        if len(self._outcomes) >= self._settings.batch_size:
            self._outcomes_ready.set()

    async def _attempt(self, event: Event) -> DeliveryOutcome:
        delivery_type = self._registry.get(event.delivery_type)
        if delivery_type is None:
            return DeliveryOutcome.permanent(f"unknown delivery type {event.delivery_type!r}")
        try:
            return await asyncio.wait_for(
                delivery_type.deliver(event, event.attempts), delivery_type.timeout_seconds
            )
        except TimeoutError:
            return DeliveryOutcome.retriable(
                f"delivery type {event.delivery_type!r} timed out after "
                f"{delivery_type.timeout_seconds:g} s"
            )
        except Exception as exc:  # a plugin's bug must not stop the dispatcher
            log.warning("delivery raised", event_id=event.id, error=repr(exc))
            return DeliveryOutcome.retriable(f"{type(exc).__name__}: {exc}")

    def _decide(
        self,
        event: Event,
        outcome: DeliveryOutcome,
        started_at: datetime,
        duration: float,
        now: datetime,
    ) -> OutcomeUpdate:
        decision = self._policy_for(event).decide(
            outcome, attempts=event.attempts, max_retries=event.max_retries, now=now, rng=self._rng
        )
        failed = outcome.kind is not OutcomeKind.SUCCESS
        error = excerpt(outcome.error) if failed else None
        return OutcomeUpdate(
            event_id=event.id,
            status=decision.status,
            retry_count=event.retry_count + (1 if failed else 0),
            last_error=error if failed else event.last_error,
            next_attempt_at=decision.next_attempt_at,
            executed_at=now if decision.status is EventStatus.COMPLETED else None,
            attempt=AttemptRecord(
                attempt=event.attempts,
                started_at=started_at,
                duration_ms=duration * 1000.0,
                outcome=outcome.kind,
                status_code=outcome.status_code,
                error=error,
                worker=self._settings.worker_id,
            ),
        )

    def _policy_for(self, event: Event) -> RetryPolicy:
        default = self._settings.retry_policy
        if event.retry_backoff_seconds is None and event.retry_backoff_max_seconds is None:
            return default
        return RetryPolicy(
            base_seconds=_or(event.retry_backoff_seconds, default.base_seconds),
            cap_seconds=_or(event.retry_backoff_max_seconds, default.cap_seconds),
        )

    def _observe(
        self,
        event: Event,
        outcome: DeliveryOutcome,
        update: OutcomeUpdate,
        duration: float,
        now: datetime,
    ) -> None:
        kind = event.delivery_type
        m = self._metrics
        m.duration.labels(kind).observe(duration)
        if update.status is EventStatus.COMPLETED:
            m.delivered.labels(kind).inc()
            m.lateness.labels(kind).observe(max(0.0, (now - event.scheduled_at).total_seconds()))
        else:
            m.failed.labels(kind, outcome.kind.value).inc()
            if update.status is EventStatus.PENDING:
                m.retried.labels(kind).inc()
            elif update.status is EventStatus.DEAD_LETTER:
                m.dead_lettered.labels(kind).inc()
            else:
                m.permanently_failed.labels(kind).inc()
        log.debug(
            "attempt finished",
            event_id=event.id,
            source=event.source,
            attempt=event.attempts,
            outcome=outcome.kind.value,
            status=update.status.value,
            error=update.last_error if outcome.kind is not OutcomeKind.SUCCESS else None,
        )
        if self._observer is not None:
            try:
                self._observer(event, event.attempts, outcome, self._settings.worker_id)
            except Exception as exc:  # observers must not break delivery
                log.warning("delivery observer raised", error=repr(exc))

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while True:
            await _first_of(self._outcomes_ready.wait(), asyncio.sleep(FLUSH_INTERVAL_SECONDS))
            self._outcomes_ready.clear()
            await self._flush()

    async def _flush(self) -> bool:
        if not self._outcomes:
            return True
        batch, self._outcomes = self._outcomes, []
        try:
            await self._store.record_outcomes(self._settings.worker_id, batch)
        except StoreError as exc:
            # Keep them: the next flush tries again. If the store stays down past the lease,
            # recovery counts the attempt and the event is delivered again (at least once).
            log.warning("writing outcomes failed; will retry", error=str(exc), count=len(batch))
            self._outcomes = batch + self._outcomes
            return False
        retries = [u.next_attempt_at for u in batch if u.next_attempt_at is not None]
        if retries:
            self._wakeup.notify(min(retries))
        return True

    async def _flush_until_written(self) -> None:
        deadline = time.monotonic() + self._settings.shutdown_timeout_seconds
        while not await self._flush() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def _drain(self) -> None:
        """Let in-flight deliveries finish within the timeout; release the rest's leases."""
        if self._in_flight:
            log.info("waiting for in-flight deliveries", count=len(self._in_flight))
            await asyncio.wait(
                list(self._in_flight.values()), timeout=self._settings.shutdown_timeout_seconds
            )
        leftovers = dict(self._in_flight)
        for task in leftovers.values():
            task.cancel()
        if leftovers:
            await asyncio.gather(*leftovers.values(), return_exceptions=True)
            try:
                released = await self._store.release(self._settings.worker_id, list(leftovers))
            except StoreError as exc:
                log.warning("releasing leases failed; they will expire", error=str(exc))
            else:
                log.info("released unfinished deliveries", count=released)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


async def _first_of(*waits: object) -> None:
    """Wait for the first of several awaitables; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
