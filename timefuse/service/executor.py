"""Running one delivery attempt: the delivery type's call, bounded and never raising."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock

log = structlog.get_logger("timefuse.dispatcher")


@dataclass(frozen=True, slots=True)
class Attempted:
    """What one attempt produced: its outcome, when it started (wall clock, for the record)
    and how long it took (monotonic seconds)."""

    outcome: DeliveryOutcome
    started_at: datetime
    seconds: float


class UnknownDeliveryType(Exception):
    """The event's delivery type is not loaded in this process."""


class AttemptExecutor:
    """Runs one attempt of one event and reports its outcome; nothing else.

    The delivery type's own failures (an exception, an attempt past its timeout, an answer
    that is not an outcome) become RETRIABLE outcomes with the reason: a plugin's bug must
    neither stop the dispatcher nor lose the event.
    """

    def __init__(
        self,
        registry: DeliveryRegistry,
        *,
        clock: Clock,
        monotonic: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._now = monotonic

    async def run(self, event: Event) -> Attempted:
        """Attempt ``event`` (as claimed); :class:`UnknownDeliveryType` if it can't be."""
        delivery_type = self._registry.get(event.delivery_type)
        if delivery_type is None:
            raise UnknownDeliveryType(event.delivery_type)
        started_at = self._clock.now()
        started = self._now()
        timeout = delivery_type.timeout_for(event)
        try:
            # A timeout scope, not wait_for: wait_for would wrap every attempt in a task.
            async with asyncio.timeout(timeout):
                outcome = await delivery_type.deliver(event, event.attempts)
        except TimeoutError:
            outcome = DeliveryOutcome.retriable(
                f"delivery type {event.delivery_type!r} timed out after {timeout:g} s"
            )
        except Exception as exc:
            log.warning("delivery raised", event_id=event.id, error=repr(exc))
            outcome = DeliveryOutcome.retriable(f"{type(exc).__name__}: {exc}")
        if not isinstance(outcome, DeliveryOutcome):
            outcome = DeliveryOutcome.retriable(
                f"delivery type {event.delivery_type!r} returned {type(outcome).__name__}, "
                "not an outcome"
            )
        return Attempted(outcome, started_at, self._now() - started)
