"""The event status machine: which status may follow which."""

from __future__ import annotations

import enum


class EventStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DEAD_LETTER = "DEAD_LETTER"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True when nothing will happen to the event unless someone redelivers it."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {EventStatus.COMPLETED, EventStatus.FAILED, EventStatus.DEAD_LETTER, EventStatus.CANCELLED}
)

# PROCESSING -> PENDING covers a retry, an expired lease and a lease released at shutdown.
# COMPLETED/FAILED/DEAD_LETTER -> PENDING is an operator's redelivery.
_LEGAL: dict[EventStatus, frozenset[EventStatus]] = {
    EventStatus.PENDING: frozenset({EventStatus.PROCESSING, EventStatus.CANCELLED}),
    EventStatus.PROCESSING: frozenset(
        {
            EventStatus.COMPLETED,
            EventStatus.PENDING,
            EventStatus.FAILED,
            EventStatus.DEAD_LETTER,
        }
    ),
    EventStatus.COMPLETED: frozenset({EventStatus.PENDING}),
    EventStatus.FAILED: frozenset({EventStatus.PENDING}),
    EventStatus.DEAD_LETTER: frozenset({EventStatus.PENDING}),
    EventStatus.CANCELLED: frozenset(),
}

REDELIVERABLE_STATUSES = frozenset(
    {EventStatus.COMPLETED, EventStatus.FAILED, EventStatus.DEAD_LETTER}
)


class IllegalTransition(Exception):
    """Raised when code asks for a status change the machine does not allow."""

    def __init__(self, current: EventStatus, target: EventStatus) -> None:
        super().__init__(f"an event in {current.value} cannot become {target.value}")
        self.current = current
        self.target = target


def can_transition(current: EventStatus, target: EventStatus) -> bool:
    return target in _LEGAL[current]


def statuses_that_may_become(target: EventStatus) -> frozenset[EventStatus]:
    """Every status from which ``target`` may follow (the condition a store write checks)."""
    return frozenset(status for status, allowed in _LEGAL.items() if target in allowed)


def check_transition(current: EventStatus, target: EventStatus) -> EventStatus:
    """Return ``target`` if the move is legal, raise :class:`IllegalTransition` otherwise."""
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target
