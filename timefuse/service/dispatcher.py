"""The dispatcher: claims due events, delivers them concurrently, writes outcomes back."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind, excerpt
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.store import (
    AttemptRecord,
    EventStore,
    OutcomeUpdate,
    StoreError,
    WatchesDue,
)
from timefuse.service.destinations import (
    DestinationGate,
    GateSettings,
    Verdict,
    destination_key,
)
from timefuse.service.metrics import Metrics
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter

log = structlog.get_logger("timefuse.dispatcher")

Observer = Callable[[Event, int, DeliveryOutcome, str], None]

STORE_RETRY_SECONDS = 1.0
SATURATED_PAUSE_SECONDS = 0.2
MIN_IDLE_SECONDS = 0.005


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
        gate: DestinationGate | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._wakeup = wakeup or DueSignal()
        self._observer = observer
        self._rng = rng or random.Random()
        self._gate = gate or DestinationGate(GateSettings())
        self._writer = OutcomeWriter(store, settings.worker_id, self._wakeup, settings.batch_size)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._held = 0  # claimed events waiting in their destination's queue
        self._pumps: set[str] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = False

    @property
    def wakeup(self) -> DueSignal:
        return self._wakeup

    @property
    def gate(self) -> DestinationGate:
        return self._gate

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then shut down gracefully."""
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self._writer.run(writer_stop), name="timefuse-outcome-writer")
        watcher = None
        if isinstance(self._store, WatchesDue):
            # Events inserted by other processes (an API, an ingest consumer) wake us at once.
            watcher = asyncio.create_task(self._store.watch_due(self._wakeup.notify, stop))
        try:
            await self._claim_loop(stop)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            self._stopping = True
            await self._drain()
            # The writer finishes the write it may be in (drained outcomes keep arriving until
            # here); then whatever is left is written, or kept trying, within the timeout.
            writer_stop.set()
            await asyncio.gather(writer, return_exceptions=True)
            await self._writer.flush_until_written(self._settings.shutdown_timeout_seconds)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            capacity = self._settings.concurrency - len(self._in_flight) - self._held
            if capacity <= 0:
                await _first_of(self._slot_freed.wait(), stop.wait())
                self._slot_freed.clear()
                continue
            limit = min(self._settings.batch_size, capacity)
            claimed = await self._claim(limit)
            if claimed is None:
                await _first_of(asyncio.sleep(STORE_RETRY_SECONDS), stop.wait())
                continue
            deferred = sum(1 for event in claimed if not self._offer(event))
            if deferred > len(claimed) // 2:
                # The due events' destinations are full: claiming again at once would only
                # hand them back again. Pause; other destinations' events wait that long.
                await _first_of(asyncio.sleep(SATURATED_PAUSE_SECONDS), stop.wait())
            elif len(claimed) < limit:
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
        # A floor: when this clock runs ahead of the store's, an event "due" here may not be
        # due there yet, and claiming again at once would spin until the clocks agree.
        timeout = max(timeout, MIN_IDLE_SECONDS)
        self._wakeup.plan(next_due)
        await _first_of(self._wakeup.wait(timeout), stop.wait())

    def _offer(self, event: Event) -> bool:
        """Start or hold a claimed event; ``False`` when it had to be handed back."""
        decision = self._gate.offer(event)
        if decision.verdict is Verdict.START:
            self._launch(event)
        elif decision.verdict is Verdict.WAIT:
            self._held += 1
            if decision.delay_seconds > 0:
                self._schedule_pump(event, decision.delay_seconds)
        else:
            self._defer(event, decision.delay_seconds)
            return False
        return True

    def _defer(self, event: Event, delay: float) -> None:
        self._metrics.throttled.labels(destination_key(event)).inc()
        self._writer.defer(event.id, self._clock.now() + timedelta(seconds=delay))

    def _schedule_pump(self, event: Event, delay: float) -> None:
        key = destination_key(event)
        if key not in self._pumps:
            self._pumps.add(key)
            asyncio.get_running_loop().call_later(delay, self._timed_pump, key, event)

    def _timed_pump(self, key: str, event: Event) -> None:
        self._pumps.discard(key)
        self._pump(event)

    def _pump(self, event: Event) -> None:
        """Start what ``event``'s destination can take now; defer what its breaker refuses."""
        if self._stopping:
            return  # held events are handed back by _drain
        start, defer, wait = self._gate.pump(event)
        for waiting in start:
            self._held -= 1
            self._launch(waiting)
        for waiting, delay in defer:
            self._held -= 1
            self._defer(waiting, delay)
        if wait > 0:
            self._schedule_pump(event, wait)
        if start or defer:
            self._slot_freed.set()

    def _launch(self, event: Event) -> None:
        if self._lease_mostly_spent(event):
            # It waited in its destination's queue for half its lease: starting now could let
            # the lease expire mid-delivery and another dispatcher deliver it too.
            self._gate.abandon(event)
            self._defer(event, 0.0)
            return
        task = asyncio.create_task(self._deliver(event), name=f"timefuse-deliver-{event.id}")
        self._in_flight[event.id] = task
        self._metrics.in_flight.inc()
        task.add_done_callback(lambda done: self._finished(event.id, done))

    def _lease_mostly_spent(self, event: Event) -> bool:
        expires = event.lock_expires_at
        if expires is None:
            return False
        remaining = (expires - self._clock.now()).total_seconds()
        return remaining < self._settings.lease_seconds / 2

    def _finished(self, event_id: str, task: asyncio.Task[None]) -> None:
        # A delivery that outlived its lease may run beside a newer claim of the same event:
        # only the entry of the task that finished goes.
        if self._in_flight.get(event_id) is task:
            del self._in_flight[event_id]
        self._metrics.in_flight.dec()
        self._slot_freed.set()

    async def _deliver(self, event: Event) -> None:
        started_at = self._clock.now()
        started = time.perf_counter()
        try:
            outcome = await self._attempt(event)
        except asyncio.CancelledError:
            self._gate.finished(event, DeliveryOutcome.retriable("cancelled at shutdown"))
            raise
        duration = time.perf_counter() - started
        now = self._clock.now()
        self._gate.finished(event, outcome, duration)
        update = self._decide(event, outcome, started_at, duration, now)
        self._observe(event, outcome, update, duration, now)
        self._writer.add(update)
        self._pump(event)

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
        await asyncio.gather(*leftovers.values(), return_exceptions=True)
        unfinished = list(leftovers) + [event.id for event in self._gate.drain_waiting()]
        self._held = 0
        if unfinished:
            try:
                released = await self._store.release(self._settings.worker_id, unfinished)
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
