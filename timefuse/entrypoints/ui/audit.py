"""Who did what in the console: a structured log line per action, and the recent ones in memory.

The log line is the record (it goes wherever the process's logs go); the few hundred most
recent actions are also kept in this process's memory so an event's page can show what was
done to it from here, without a table of its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("timefuse.console")

KEPT = 500
OPEN_CONSOLE = "(open console)"


@dataclass(frozen=True, slots=True)
class Action:
    at: float  # seconds since the epoch
    who: str
    action: str
    target: str  # an event id, a source filter, a destination
    outcome: str


class ActionLog:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._recent: deque[Action] = deque(maxlen=KEPT)

    def record(
        self, who: str | None, action: str, target: str, outcome: str, **extra: object
    ) -> None:
        name = who or OPEN_CONSOLE
        self._recent.append(Action(self._clock(), name, action, target, outcome))
        log.info("console action", action=action, target=target, outcome=outcome, key=name, **extra)

    def about(self, target: str) -> list[Action]:
        """The kept actions on ``target``, oldest first."""
        return [action for action in self._recent if action.target == target]
