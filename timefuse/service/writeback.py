"""Writing attempt outcomes and hand-backs back to the store in batches.

One transaction per flush instead of one per event: at thousands of deliveries a second the
store sees tens of statements a second, not thousands. While the store can't take them, the
writer keeps them and tries again with a growing pause, logging the outage once (and again
every half minute while it lasts). A write the store refuses for its values is split until
the update at fault is alone; that one is written without its text (then without its
callback), or dropped: its claim then expires and lease recovery counts the attempt, so the
event is neither lost nor stuck.

A completion callback travels in its parent's outcome (``OutcomeUpdate.callback``) and the
store inserts it in the outcome's own transaction, when and only when the outcome applies: an
outcome fenced out (the lease was lost, another worker holds the event now) reports nothing,
since the event ends as that other worker's attempt decides. So no crash can come between an
outcome and its callback, and a write made again after its answer was lost (which the fence
then refuses, if it had applied) can't store a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import structlog

from timefuse.ports.store import (
    ClaimRef,
    OutcomeUpdate,
    StoreError,
    StoreUnavailable,
)
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.dispatcher")

FLUSH_INTERVAL_SECONDS = 0.02
MAX_BACKOFF_SECONDS = 2.0
OUTAGE_LOG_EVERY_SECONDS = 30.0
# Hand-backs due within the same tenth of a second share one statement.
DELAY_GRANULARITY = 0.1


class OutcomeStore(Protocol):
    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]: ...

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float = 0.0) -> int: ...


@dataclass(eq=False, slots=True)
class _Outcome:
    """One outcome to write (with its callback, if any)."""

    update: OutcomeUpdate
    # A write of it failed without an answer: it may have applied nonetheless.
    in_doubt: bool = False


class OutcomeWriter:
    def __init__(
        self,
        store: OutcomeStore,
        wakeup: DueSignal,
        *,
        batch_size: int,
        monotonic: Callable[[], float],
    ) -> None:
        self._store = store
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._now = monotonic
        self._outcomes: list[_Outcome] = []
        self._hand_backs: dict[float, list[ClaimRef]] = defaultdict(list)
        self._ready = asyncio.Event()  # a batch is full: write it now
        self._arrived = asyncio.Event()  # something to write
        self._failures = 0
        self._outage_logged_at: float | None = None
        # Outcomes the store answered it applied (one whose answer was lost is not counted).
        self.written = 0
        # Outcomes, and callbacks, the store refused outright.
        self.dropped = 0

    def add(self, update: OutcomeUpdate) -> None:
        """Write ``update`` (and, if it applies, its callback with it)."""
        self._outcomes.append(_Outcome(update))
        self._arrived.set()
        if len(self._outcomes) >= self._batch_size:
            self._ready.set()

    def hand_back(self, ref: ClaimRef, delay_seconds: float) -> None:
        """Return a claimed event to PENDING after ``delay_seconds``, its attempt not counted."""
        bucket = round(-(-delay_seconds // DELAY_GRANULARITY) * DELAY_GRANULARITY, 3)
        self._hand_backs[bucket].append(ref)
        self._arrived.set()

    @property
    def pending(self) -> int:
        return len(self._outcomes) + sum(len(refs) for refs in self._hand_backs.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every few milliseconds, or at once when a batch is full, until ``stop``.

        Stopping never interrupts a write: a batch taken for writing when the process is asked
        to stop is written (or kept) before this returns, not dropped by a cancellation.
        """
        while not stop.is_set():
            if not self.pending:
                # Idle: sleep until something arrives (or the process stops).
                self._arrived.clear()
                await _first_of(self._arrived.wait(), stop.wait())
                continue
            # Gather a batch for a few milliseconds (or back off while the store is down).
            pause = FLUSH_INTERVAL_SECONDS
            if self._failures:
                pause = min(MAX_BACKOFF_SECONDS, FLUSH_INTERVAL_SECONDS * 2**self._failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), pause)
            self._ready.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; ``False`` (and everything kept) if the store is down."""
        try:
            await self._flush_outcomes()
            await self._flush_hand_backs()
        except StoreError as exc:
            # Down, or refusing a hand-back (which quotes only ids): keep it all, try again.
            self._outage(exc)
            return False
        if self._failures:
            log.info("writing outcomes again", after_failures=self._failures)
        self._failures = 0
        self._outage_logged_at = None
        return True

    async def flush_until_written(self, timeout: float) -> bool:
        deadline = self._now() + timeout
        while not await self.flush():
            if self._now() >= deadline:
                return False
            await asyncio.sleep(min(MAX_BACKOFF_SECONDS, max(0.0, deadline - self._now())))
        return True

    def _outage(self, exc: StoreError) -> None:
        self._failures += 1
        now = self._now()
        last = self._outage_logged_at
        if last is None or now - last >= OUTAGE_LOG_EVERY_SECONDS:
            self._outage_logged_at = now
            log.warning(
                "writing outcomes failed; keeping them and retrying",
                error=str(exc),
                pending=self.pending,
                failures=self._failures,
            )

    async def _flush_outcomes(self) -> None:
        while self._outcomes:
            batch = self._outcomes[: self._batch_size]
            del self._outcomes[: len(batch)]
            settled: set[_Outcome] = set()
            try:
                await self._write(batch, settled)
            except BaseException:
                # Kept for the next flush (an outage, or a cancellation at shutdown), but for
                # what the store has answered for. A write left unanswered may have applied.
                unsettled = [outcome for outcome in batch if outcome not in settled]
                for outcome in unsettled:
                    outcome.in_doubt = True
                self._outcomes[:0] = unsettled
                raise

    async def _write(self, batch: list[_Outcome], settled: set[_Outcome]) -> None:
        try:
            applied = await self._store.record_outcomes([outcome.update for outcome in batch])
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if len(batch) > 1:
                middle = len(batch) // 2
                await self._write(batch[:middle], settled)
                await self._write(batch[middle:], settled)
                return
            await self._write_poison(batch[0], exc, settled)
            return
        self._settle(batch, applied, settled)

    async def _write_poison(
        self, outcome: _Outcome, exc: StoreError, settled: set[_Outcome]
    ) -> None:
        update = outcome.update
        log.error("an outcome was refused by the store", event_id=update.event_id, error=str(exc))
        for attempt in _without_what_may_be_refused(update):
            try:
                applied = await self._store.record_outcomes([attempt])
            except StoreUnavailable:
                raise
            except StoreError as again:
                exc = again
                continue
            if attempt.callback is None and update.callback is not None:
                self.dropped += 1
                log.error(
                    "dropped a completion callback the store refuses", event_id=update.event_id
                )
            outcome.update = attempt
            self._settle([outcome], applied, settled)
            return
        # Its claim expires and lease recovery counts the attempt: not lost, not stuck.
        self.dropped += 1
        settled.add(outcome)
        log.error("dropped an outcome the store refuses", event_id=update.event_id, error=str(exc))

    def _settle(
        self, outcomes: list[_Outcome], applied: frozenset[str], settled: set[_Outcome]
    ) -> None:
        """Count what applied, and wake the dispatcher for the retries and callbacks it made
        due."""
        took = _took(outcomes, applied)
        retries: list[float] = []
        callbacks: list[datetime] = []
        for outcome, applies in zip(outcomes, took, strict=True):
            settled.add(outcome)
            if applies:
                self.written += 1
            elif not outcome.in_doubt:
                continue
            # Applied now, or maybe by a write whose answer was lost (refused now by the fence
            # it passed then): a wake-up for nothing costs the dispatcher one look.
            update = outcome.update
            if update.retry_delay_seconds is not None:
                retries.append(update.retry_delay_seconds)
            if update.callback is not None:
                callbacks.append(update.callback.next_attempt_at)
        if retries:
            self._wakeup.notify_after(min(retries))
        if callbacks:
            self._wakeup.notify(min(callbacks))

    async def _flush_hand_backs(self) -> None:
        while self._hand_backs:
            # Taken out before the await: hand-backs added meanwhile go to a fresh list.
            delay, refs = self._hand_backs.popitem()
            try:
                await self._store.hand_back(refs, delay)
            except BaseException:
                self._hand_backs[delay].extend(refs)
                raise
            self._wakeup.notify_after(delay)


def _without_what_may_be_refused(update: OutcomeUpdate) -> list[OutcomeUpdate]:
    """What to write instead of ``update``, refused, in turn: without its error text, then
    without its callback (a notice the store refuses never keeps its parent's outcome from
    being written), then without both."""
    tries = []
    stripped = update
    if update.last_error is not None or update.attempt.error is not None:
        stripped = replace(
            update,
            last_error="the delivery type's error text could not be stored",
            attempt=replace(update.attempt, error=None),
        )
        tries.append(stripped)
    if update.callback is not None:
        tries.append(replace(update, callback=None))
        if stripped is not update:
            tries.append(replace(stripped, callback=None))
    return tries


def _took(outcomes: list[_Outcome], applied: frozenset[str]) -> list[bool]:
    """Which of ``outcomes`` applied, given the ids of the events whose update did.

    Of several outcomes for one event only the latest claim's can apply (the store's rule); of
    one claim's, the last given."""
    latest: dict[str, int] = {}
    for n, outcome in enumerate(outcomes):
        event_id, claim = outcome.update.event_id, outcome.update.ref.claim
        kept = latest.get(event_id)
        if kept is None or claim >= outcomes[kept].update.ref.claim:
            latest[event_id] = n
    return [
        outcome.update.event_id in applied and latest[outcome.update.event_id] == n
        for n, outcome in enumerate(outcomes)
    ]


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
