"""Waking the dispatcher when work falls due sooner than it planned to look."""

from __future__ import annotations

import asyncio
from datetime import datetime


class DueSignal:
    """Tells a sleeping dispatcher that an event is due at a given time.

    The dispatcher sleeps until its next known due time; a newly accepted event due earlier
    than that wakes it (an event due later changes nothing, so a flood of far-future
    submissions costs no wake-ups).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._earliest: datetime | None = None

    def notify(self, due_at: datetime | None = None) -> None:
        if due_at is None:
            self._event.set()
            return
        if self._earliest is None or due_at < self._earliest:
            self._earliest = due_at
            self._event.set()

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
