"""Waking the dispatcher when work falls due sooner than it planned to look."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from timefuse.ports.clock import Clock


class DueSignal:
    """Tells a sleeping dispatcher that an event is due at a given time.

    The dispatcher sleeps until its next known due time; a newly accepted event due earlier
    than that wakes it (an event due later changes nothing, so a flood of far-future
    submissions costs no wake-ups). Times are instants as the store sees them: the signal
    keeps the store's clock offset from this process's, as last observed, for callers that
    know only a delay.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._event = asyncio.Event()
        self._earliest: datetime | None = None
        self._clock = clock
        self._offset = timedelta(0)

    def observe(self, store_now: datetime) -> None:
        """Note the store's clock as just read (a claim's or a due query's answer)."""
        if self._clock is not None:
            self._offset = store_now - self._clock.now()

    def store_now(self) -> datetime | None:
        """The store's clock as last observed, carried forward on this process's."""
        return None if self._clock is None else self._clock.now() + self._offset

    def notify(self, due_at: datetime | None = None) -> None:
        if due_at is None:
            self._event.set()
            return
        if self._earliest is None or due_at < self._earliest:
            self._earliest = due_at
            self._event.set()

    def notify_after(self, seconds: float) -> None:
        """An event falls due ``seconds`` from now (the store's now)."""
        now = self.store_now()
        self.notify(None if now is None else now + timedelta(seconds=seconds))

    def plan(self, due_at: datetime | None) -> None:
        """Record when the dispatcher will wake anyway; only earlier news will wake it."""
        self._earliest = due_at

    async def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; ``True`` if woken by :meth:`notify`."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(0.0, timeout))
        except TimeoutError:
            return False
        finally:
            self._event.clear()
            # Awake now: the planned time has passed, and any news until the next plan() must
            # wake the next wait (a later-due insert committed while we were claiming, say).
            self._earliest = None
        return True
