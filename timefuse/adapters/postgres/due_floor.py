"""Where a claim starts reading the due index: past the entries of events already claimed.

Claims read the due index (PENDING rows in (next_attempt_at, id) order) from its front. A
claim moves its events out of that partial index, but their old entries stay until vacuum
removes them, and vacuum comes rarely to a partition that grows all day: after nine million
events of a day, the first due row cost 15 ms and 8,000 buffers of such entries, read four
times per claim (its due destinations, its horizon, its candidates, the next due time).

So a process keeps a floor, the (due time, id) its claims read from:

- **Looked up** at most once a second while it claims: the earliest PENDING row, read from
  the front of the index, but no later than a few seconds before the database's now (margin
  for writes that no notification announces).
- **Lowered at once** for every event made due below it that the process hears of. A write
  that makes events due at a time it chooses (insert, reschedule, amend, redelivery) sends a
  notification at commit with the earliest due time it wrote; a hand-back due now and a lease
  recovery send "look now", which drops the floor until the next lookup. Heard while a lookup
  is under way, they apply to what the lookup finds too. Retries and hand-backs for later are
  due at the database's now plus a delay: above the floor, whose margin covers a commit slow
  to become visible.
- **None at all** while no connection of the process listens: its claims read from the front.

An event made due below the floor that no notification announces waits for the next lookup:
a second at most while the process claims (its poll interval while it idles). The floor is
the earliest pending event of any destination, so a full destination's old backlog holds it
at that backlog's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOOKUP_SECONDS = 1.0  # at most one lookup in this long
MARGIN_SECONDS = 5.0  # the floor stays this far behind the database's now

# Before any due time: no floor.
_FRONT = (datetime.min.replace(tzinfo=UTC), "")


@dataclass
class DueFloor:
    """A process's floor; its times are the database's, its clock a monotonic one."""

    at: datetime | None = None  # None: read from the front
    id: str = ""
    look_after: float = 0.0
    listeners: int = 0  # connections listening for notifications
    _lookups: int = 0  # lookups under way
    _lowest_heard: datetime | None = None  # since the first of them began
    _dropped: bool = False  # a "look now" heard since then

    def params(self) -> dict[str, Any]:
        at, event_id = _FRONT if self.at is None or not self.listeners else (self.at, self.id)
        return {"floor_at": at, "floor_id": event_id}

    def lookup_due(self, now: float) -> bool:
        return self.listeners > 0 and now >= self.look_after

    def begin_lookup(self) -> None:
        if not self._lookups:
            self._lowest_heard, self._dropped = None, False
        self._lookups += 1

    def end_lookup(self, found: tuple[datetime, str] | None, now: float) -> None:
        """The lookup's result (``None``: it failed), at monotonic ``now``."""
        self._lookups -= 1
        if found is not None and not self._dropped:
            at, event_id = found
            if self._lowest_heard is not None and self._lowest_heard <= at:
                at, event_id = self._lowest_heard, ""
            self.at, self.id = at, event_id
            self.look_after = now + LOOKUP_SECONDS
        if not self._lookups:
            self._lowest_heard, self._dropped = None, False

    def hear(self, due_at: datetime | None) -> None:
        """A notification: events made due at ``due_at`` (``None``: look now)."""
        if due_at is None or due_at.tzinfo is None:
            self.drop()
            return
        if self._lookups and (self._lowest_heard is None or due_at < self._lowest_heard):
            self._lowest_heard = due_at
        if self.at is not None and due_at <= self.at:
            self.at, self.id = due_at, ""

    def drop(self) -> None:
        self.at, self.id, self.look_after = None, "", 0.0
        if self._lookups:
            self._dropped = True

    def listen(self, listening: bool) -> None:
        """A connection starts (``True``) or stops listening; either way, what was kept goes.
        While none listens there is no floor."""
        self.listeners = max(0, self.listeners + (1 if listening else -1))
        self.drop()
