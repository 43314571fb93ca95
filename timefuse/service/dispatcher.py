"""The dispatcher: claims due events, hands them to the gate, records what their attempts did.

It claims only what its destinations can start soon (the gate's budget) and only the delivery
types this process has loaded; runs each started event's attempt with the executor; and
queues the outcome for the writer. It keeps the leases of long attempts alive, and at shutdown
lets attempts finish within a timeout and hands back everything else.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from timefuse.domain.callback import callback_event
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind, excerpt
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.store import (
    AttemptRecord,
    ClaimRef,
    ClaimRequest,
    DueFilter,
    OutcomeUpdate,
    StoreError,
)
from timefuse.service.executor import Attempted, AttemptExecutor, UnknownDeliveryType
from timefuse.service.gate import Claimed, DestinationGate, GateSettings, HandBackReason
from timefuse.service.metrics import Metrics
from timefuse.service.presence import Presence
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter

log = structlog.get_logger("timefuse.dispatcher")

Observer = Callable[[Event, int, DeliveryOutcome, str], None]

STORE_RETRY_SECONDS = 1.0
MIN_IDLE_SECONDS = 0.005
# An event whose type this process doesn't know (after a plugin went away) comes back then.
UNKNOWN_TYPE_DELAY_SECONDS = 60.0
# How often a process reads the breakers the others opened.
BREAKER_SYNC_SECONDS = 0.5
# With shared limits, claim again once 1/REFILL_FRACTION of the attempts in flight ended.
REFILL_FRACTION = 4


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
        store: Store,
        registry: DeliveryRegistry,
        clock: Clock,
        metrics: Metrics,
        settings: DispatcherSettings,
        gate_settings: GateSettings | None = None,
        wakeup: DueSignal | None = None,
        observer: Observer | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._wakeup = wakeup or DueSignal(clock)
        self._observer = observer
        self._rng = rng or random.Random()
        self._now = monotonic
        self._executor = AttemptExecutor(registry, clock=clock, monotonic=monotonic)
        self._writer = OutcomeWriter(
            store, self._wakeup, batch_size=settings.batch_size, monotonic=monotonic
        )
        self._room = asyncio.Event()
        self._shared = store.capabilities.limits_sharer is not None
        gate = gate_settings or GateSettings()
        self._breaker_news: deque[tuple[str, bool]] = deque()
        self._news = asyncio.Event()
        self._gate = DestinationGate(
            # A claimed event waits at most a quarter of its lease for its destination: it
            # starts with most of its lease left, or is handed back well inside it.
            replace(
                gate,
                shared=self._shared,
                hold_seconds=min(gate.hold_seconds, settings.lease_seconds / 4),
            ),
            start=self._start,
            hand_back=self._hand_back,
            monotonic=monotonic,
            on_room=self._room.set,
            on_breaker=self._breaker_changed,
        )
        self._running: dict[asyncio.Task[None], Claimed] = {}
        self._short_of_room = False
        # With shared limits the store gives a destination no more than its free slots, so a
        # short claim usually means "full", not "nothing due": the next claim waits for this
        # many attempts to end (a worthwhile batch), not for a poll or a due time.
        self._refill_after = 0
        metrics.count_in_flight(lambda: len(self._running))
        self._store_failures = 0
        self._empty_claims = 0
        self._presence: Presence | None = None

    @property
    def wakeup(self) -> DueSignal:
        return self._wakeup

    @property
    def gate(self) -> DestinationGate:
        return self._gate

    @property
    def writer(self) -> OutcomeWriter:
        return self._writer

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event, *, presence: Presence | None = None) -> None:
        """Dispatch until ``stop`` is set, then shut down gracefully.

        Raises if the outcome writer or the lease keeper fails: a dispatcher that can't
        record what it delivers must not go on delivering.

        :param presence: this process's heartbeats. Each claim is then made only once the
            store heard of the process lately (:meth:`Presence.vouch`): after a silence
            long enough to be judged dead, a heartbeat first, so what it claims next is
            not taken back as a dead worker's.
        """
        self._presence = presence
        # Set once the attempts have drained: the writer and the lease keeper work until then
        # (an attempt the shutdown waits for keeps its lease as long as it runs).
        writer_stop = asyncio.Event()
        helpers = [
            asyncio.create_task(self._writer.run(writer_stop), name="timefuse-outcome-writer"),
            asyncio.create_task(self._keep_leases(writer_stop), name="timefuse-lease-keeper"),
        ]
        if self._shared:
            helpers.append(
                asyncio.create_task(self._share_breakers(stop), name="timefuse-breakers")
            )
        watcher = self._store.capabilities.due_watcher
        if watcher is not None:
            # Events made due by other processes (an API, an ingest consumer) wake us at once.
            helpers.append(asyncio.create_task(watcher.watch_due(self._wakeup.notify, stop)))
        await self._recover_own_claims()
        try:
            await self._claim_loop(stop, helpers)
        finally:
            await self._drain()
            writer_stop.set()
            for helper in helpers[1:]:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._writer.flush_until_written(self._settings.shutdown_timeout_seconds)

    async def _recover_own_claims(self) -> None:
        """Claims held under this worker's id when it starts are a dead predecessor's (a
        process restarted with the same TIMEFUSE_WORKER_ID): they can't be running here, so
        they go back at once instead of at their lease's end. Each counts its attempt."""
        try:
            recovered = await self._store.recover_expired_leases([self._settings.worker_id])
        except StoreError as exc:
            log.warning("recovering this worker's old claims failed", error=str(exc))
            return
        if recovered:
            log.info("recovered claims left by an earlier run", count=recovered)

    # -- claiming ----------------------------------------------------------------------------

    def _due_filter(self, excluded: frozenset[str]) -> DueFilter:
        return DueFilter(frozenset(self._registry.names()), excluded)

    async def _claim_loop(self, stop: asyncio.Event, helpers: list[asyncio.Task[None]]) -> None:
        settings = self._settings
        while not stop.is_set():
            _raise_if_failed(helpers)
            room = settings.concurrency - self._gate.occupied
            self._short_of_room = room < min(settings.batch_size, settings.concurrency) // 2
            if room <= 0:
                await self._sleep(settings.poll_interval_seconds, stop)
                continue
            limit = min(settings.batch_size, room)
            budget = self._gate.claim_budget()
            request = ClaimRequest(
                worker=settings.worker_id,
                limit=limit,
                lease_seconds=settings.lease_seconds,
                due=self._due_filter(budget.excluded),
                budgets=budget.budgets,
                default_budget=budget.default,
                shared=self._gate.shared_limits() if self._shared else None,
            )
            claimed = await self._claim(request)
            if claimed is None:
                await self._sleep(min(STORE_RETRY_SECONDS * self._store_failures, 5.0), stop)
                continue
            self._empty_claims = 0 if claimed else self._empty_claims + 1
            if claimed < limit:
                if claimed and self._shared:
                    await self._until_refill(stop)
                else:
                    await self._idle(stop)

    async def _until_refill(self, stop: asyncio.Event) -> None:
        """Sleep until a quarter of what is in flight has ended (or a wake-up, or the poll
        interval): the store then has that many slots to give again."""
        if not self._gate.occupied:
            await self._idle(stop)
            return
        self._refill_after = max(1, self._gate.occupied // REFILL_FRACTION)
        await self._sleep(self._settings.poll_interval_seconds, stop, self._wakeup.wait)
        self._refill_after = 0

    async def _claim(self, request: ClaimRequest) -> int | None:
        """Claim and admit; how many were claimed, ``None`` if the store failed."""
        try:
            if self._presence is not None:
                await self._presence.vouch()
            sent = self._now()
            batch = await self._store.claim(request)
        except StoreError as exc:
            self._store_failures += 1
            if self._store_failures == 1 or self._store_failures % 30 == 0:
                log.warning("claiming failed; retrying", error=str(exc))
            return None
        if self._store_failures:
            log.info("claiming again", after_failures=self._store_failures)
            self._store_failures = 0
        if batch is None:
            return 0
        self._metrics.claim_latency.observe(self._now() - sent)
        self._metrics.claimed.observe(len(batch.events))
        self._wakeup.observe(batch.store_now)
        for event in batch.events:
            self._gate.admit(Claimed.of(event, sent), probe=event.id in batch.probes)
        return len(batch.events)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until the next due time, a wake-up, room at a destination, or the poll
        interval, whichever is first. Times come from the store's clock, not ours."""
        timeout = self._settings.poll_interval_seconds
        due = self._due_filter(self._gate.claim_budget().excluded)
        try:
            found = await self._store.next_due(due)
        except StoreError:
            found = None
        if found is not None:
            self._wakeup.observe(found.store_now)
            if found.at is not None:
                timeout = min(timeout, (found.at - found.store_now).total_seconds())
            self._wakeup.plan(found.at)
        # A floor, so due events this process may not claim (another took them, or another
        # process holds the destination's whole cap) can't spin it: it grows while claims
        # come back empty.
        floor = min(
            self._settings.poll_interval_seconds,
            MIN_IDLE_SECONDS * 2 ** min(self._empty_claims, 16),
        )
        await self._sleep(max(timeout, floor), stop, self._wakeup.wait)

    async def _sleep(
        self,
        seconds: float,
        stop: asyncio.Event,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        waits: list[object] = [self._room.wait(), stop.wait()]
        waits.append(asyncio.sleep(seconds) if wait is None else wait(seconds))
        await _first_of(*waits)
        self._room.clear()

    # -- attempts ----------------------------------------------------------------------------

    def _start(self, claimed: Claimed) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(claimed))
        self._running[task] = claimed
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._short_of_room:
            self._room.set()
        elif self._refill_after:
            self._refill_after -= 1
            if not self._refill_after:
                self._room.set()

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            attempted = await self._executor.run(claimed.event)
        except UnknownDeliveryType:
            self._gate.abandoned(claimed)
            self._writer.hand_back(claimed.ref, UNKNOWN_TYPE_DELAY_SECONDS)
            return
        except asyncio.CancelledError:
            # Cut off at shutdown: handed back uncounted (the receiver may have it; the
            # event id lets it drop the duplicate).
            self._gate.abandoned(claimed)
            self._writer.hand_back(claimed.ref, 0.0)
            raise
        self._record(claimed, attempted)

    def _record(self, claimed: Claimed, attempted: Attempted) -> None:
        event, outcome = claimed.event, attempted.outcome
        now = self._clock.now()
        decision = self._policy_for(event).decide(
            outcome, attempts=event.attempts, max_retries=event.max_retries, now=now, rng=self._rng
        )
        failed = outcome.kind is not OutcomeKind.SUCCESS
        error = excerpt(outcome.error) if failed else None
        update = OutcomeUpdate(
            ref=claimed.ref,
            status=decision.status,
            retry_count=event.retry_count + (1 if failed else 0),
            last_error=error if failed else event.last_error,
            retry_delay_seconds=(
                decision.delay_seconds if decision.status is EventStatus.PENDING else None
            ),
            executed_at=now if decision.status is EventStatus.COMPLETED else None,
            attempt=AttemptRecord(
                attempt=event.attempts,
                started_at=attempted.started_at,
                duration_ms=attempted.seconds * 1000.0,
                outcome=outcome.kind,
                status_code=outcome.status_code,
                error=error,
                worker=claimed.ref.worker,
            ),
        )
        try:
            callback = callback_event(
                event,
                decision.status,
                now=now,
                attempts=event.attempts,
                retry_count=update.retry_count,
                status_code=outcome.status_code,
                response_excerpt=outcome.response_excerpt,
                error=error,
            )
        except Exception:
            # The outcome is written and the gate freed whatever a notice's building does.
            log.exception("completion callback could not be built", event_id=event.id)
            callback = None
        if callback is not None:
            # Written with the outcome, in its transaction, if the outcome applies.
            update = replace(update, callback=callback)
        self._writer.add(update)
        self._gate.finished(claimed, outcome, attempted.seconds)
        self._observe(event, outcome, update, attempted.seconds)

    def _policy_for(self, event: Event) -> RetryPolicy:
        default = self._settings.retry_policy
        if event.retry_backoff_seconds is None and event.retry_backoff_max_seconds is None:
            return default
        return RetryPolicy(
            base_seconds=_or(event.retry_backoff_seconds, default.base_seconds),
            cap_seconds=_or(event.retry_backoff_max_seconds, default.cap_seconds),
        )

    def _hand_back(self, claimed: Claimed, delay: float, reason: HandBackReason) -> None:
        self._metrics.throttled.labels(reason.value).inc()
        self._writer.hand_back(claimed.ref, delay)

    def _observe(
        self, event: Event, outcome: DeliveryOutcome, update: OutcomeUpdate, duration: float
    ) -> None:
        kind = event.delivery_type
        m = self._metrics.delivery_series(kind)
        m.duration.observe(duration)
        if update.status is EventStatus.COMPLETED:
            m.delivered.inc()
            lateness = (self._clock.now() - event.scheduled_at).total_seconds()
            m.lateness.observe(max(0.0, lateness))
            log.debug(
                "attempt delivered",
                event_id=event.id,
                source=event.source,
                delivery_type=kind,
                attempt=event.attempts,
                status_code=outcome.status_code,
            )
        else:
            m.failed(outcome.kind.value).inc()
            if update.status is EventStatus.PENDING:
                m.retried.inc()
            elif update.status is EventStatus.DEAD_LETTER:
                m.dead_lettered.inc()
            else:
                m.permanently_failed.inc()
            log.info(
                "attempt failed",
                event_id=event.id,
                source=event.source,
                delivery_type=kind,
                attempt=event.attempts,
                outcome=outcome.kind.value,
                status=update.status.value,
                retry_in_seconds=update.retry_delay_seconds,
                error=update.last_error,
            )
        if self._observer is not None:
            try:
                self._observer(event, event.attempts, outcome, self._settings.worker_id)
            except Exception as exc:  # observers must not break delivery
                log.warning("delivery observer raised", error=repr(exc))

    # -- leases and shutdown -----------------------------------------------------------------

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        """Extend the leases of attempts running past half their lease, so a slow receiver's
        attempt is never taken over by lease recovery while it is still in progress."""
        lease = self._settings.lease_seconds
        every = max(0.05, lease / 4)
        while not stop.is_set():
            await _first_of(asyncio.sleep(every), stop.wait())
            now = self._now()
            old = [c for c in self._running.values() if now - c.claimed_at > lease / 2]
            if not old:
                continue
            try:
                await self._store.extend_leases([c.ref for c in old], lease)
            except StoreError as exc:
                log.warning("extending leases failed", error=str(exc), count=len(old))
                continue
            for claimed in old:
                claimed.claimed_at = now

    def _breaker_changed(self, key: str, opened: bool) -> None:
        self._breaker_news.append((key, opened))
        self._news.set()

    async def _share_breakers(self, stop: asyncio.Event) -> None:
        """Publish this process's breaker changes at once; follow the others' twice a second."""
        while not stop.is_set():
            self._news.clear()
            try:
                closed = False
                while self._breaker_news:
                    key, opened = self._breaker_news[0]
                    await self._store.publish_breaker(key, open=opened)
                    self._breaker_news.popleft()
                    closed = closed or not opened
                if closed:
                    # What the store held for it may be claimed now (after a reset, at once).
                    self._room.set()
                shared = await self._store.open_breakers()
            except StoreError as exc:
                log.warning("sharing breakers failed; retrying", error=str(exc))
            else:
                self._gate.sync_breakers(shared)
            await _first_of(self._news.wait(), asyncio.sleep(BREAKER_SYNC_SECONDS), stop.wait())

    async def _drain(self) -> None:
        """Let attempts finish within the timeout; hand back whatever didn't start or end."""
        for claimed in self._gate.drain():
            self._writer.hand_back(claimed.ref, 0.0)
        running = list(self._running)
        if running:
            log.info("waiting for in-flight deliveries", count=len(running))
            await asyncio.wait(running, timeout=self._settings.shutdown_timeout_seconds)
        leftovers = [task for task in running if not task.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        if leftovers:
            log.info("handing back unfinished deliveries", count=len(leftovers))

    def release_refs(self) -> list[ClaimRef]:
        """The claims of attempts running now (for tests and diagnostics)."""
        return [claimed.ref for claimed in self._running.values()]


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _raise_if_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} failed") from task.exception()


async def _first_of(*waits: object) -> None:
    """Wait for the first of several awaitables; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
