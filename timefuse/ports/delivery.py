"""The delivery port: one delivery type (http, kafka, a plugin's own) delivers one event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome


class Deliver(Protocol):
    async def __call__(self, event: Event, attempt: int) -> DeliveryOutcome:
        """Deliver ``event`` once (``attempt`` counts from 1) and say how it went.

        Should not raise: a raised exception is recorded as a retriable failure.
        """
        ...


DestinationValidator = Callable[[str], "str | None"]
AttemptTimeout = Callable[[Event], float]
Lifecycle = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeliveryType:
    """A named way of delivering events.

    :param name: what clients put in ``delivery_type`` (lower case).
    :param validate_destination: returns ``None`` for a good destination, else the reason.
    :param deliver: performs one attempt.
    :param start: opens the type's resources (sessions, producers) before the first delivery.
    :param stop: releases them at shutdown.
    :param timeout_seconds: an attempt still running after this is cut off as retriable.
    :param attempt_timeout: when given, the cut-off for one event instead (a type whose events
        carry their own timeouts).
    :param destination_concurrency: deliveries in flight at once to one destination when
        configuration names no cap for it; ``None`` takes ``TIMEFUSE_DESTINATION_CONCURRENCY``,
        ``0`` means no cap (a broker that batches many records per request wants many).
    """

    name: str
    validate_destination: DestinationValidator
    deliver: Deliver
    start: Lifecycle | None = None
    stop: Lifecycle | None = None
    timeout_seconds: float = 35.0
    destination_concurrency: int | None = None
    attempt_timeout: AttemptTimeout | None = None
    origin: str = field(default="builtin", compare=False)
    version: str = field(default="", compare=False)

    def timeout_for(self, event: Event) -> float:
        """Seconds after which an attempt of ``event`` is cut off."""
        if self.attempt_timeout is None:
            return self.timeout_seconds
        return self.attempt_timeout(event)
