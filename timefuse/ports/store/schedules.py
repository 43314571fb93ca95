"""Schedules: recurring schedules kept beside the events, and their occurrences made into events.

A schedule's row carries a ``version``, bumped by every write, so two writers (the planner and
an API update, or two planners across a leader's failover) can't overwrite each other: each
write names the version it read and applies only if the row still has it. Occurrences are
inserted by :meth:`Schedules.materialise` together with the schedule's new place, in one
transaction, and deduplicated like any insert (by id, and by ``(source, external_job_id,
scheduled_at)``), so an occurrence is created at most once however often it is planned.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.schedule import Schedule, ScheduleState, state_of
from timefuse.ports.store.records import EventPage, source_set

# The key of an occurrence event's ``extra`` that names its schedule: occurrences are listed by
# it (an index on it in the SQL stores), so a schedule deleted and declared again under the
# same key doesn't list the old one's occurrences.
SCHEDULE_ID_EXTRA = "schedule_id"
# Set (true) on the occurrence a trigger made, beside the schedule's id.
TRIGGERED_EXTRA = "triggered"


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule, where it stands, and the version of its row.

    :param next_run_at: the next instant still to run (:func:`timefuse.domain.schedule.
        next_instant`, missed or not); ``None`` once the schedule is over. The planner looks
        for running schedules by it.
    :param version: the row's version, from 1; every write makes it one more.
    """

    schedule: Schedule
    next_run_at: datetime | None
    version: int
    updated_at: datetime

    @property
    def id(self) -> str:
        return self.schedule.id

    @property
    def state(self) -> ScheduleState:
        return state_of(self.schedule, self.next_run_at)


@dataclass(frozen=True, slots=True)
class ScheduleQuery:
    """Which schedules a listing returns. ``sources``: only theirs (empty: none; ``None``:
    any); ``state``: only those in it."""

    sources: frozenset[str] | None = None
    state: ScheduleState | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", source_set(self.sources))


_MAX_POSITION_TEXT = 1024


@dataclass(frozen=True, slots=True)
class SchedulePosition:
    """A schedule's place in the listing order ``(source, key)``, code point by code point;
    a page resumes after it. :meth:`encode` gives the opaque text handed to clients."""

    source: str
    key: str

    def encode(self) -> str:
        raw = json.dumps([self.source, self.key], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str) -> SchedulePosition:
        """The position ``text`` encodes; :class:`ValueError` for any other text."""
        if not text or len(text) > _MAX_POSITION_TEXT or not text.isascii():
            raise ValueError("malformed cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            value = json.loads(raw)
        except (binascii.Error, ValueError):
            raise ValueError("malformed cursor") from None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(part, str) and part for part in value)
        ):
            raise ValueError("malformed cursor")
        position = cls(value[0], value[1])
        if position.encode() != text:
            raise ValueError("malformed cursor")
        return position


@dataclass(frozen=True, slots=True)
class SchedulePage:
    schedules: list[ScheduleRecord]
    next_after: SchedulePosition | None


@dataclass(frozen=True, slots=True)
class Materialisation:
    """One schedule's plan, to write at once: its occurrences and its new place.

    ``record`` is the schedule as the plan leaves it (its ``version`` is
    ``expected_version + 1``); it applies only if the row still has ``expected_version``, and
    ``events`` are inserted only if it applies.
    """

    record: ScheduleRecord
    expected_version: int
    events: Sequence[Event]


class Schedules(Protocol):
    async def save_schedule(self, record: ScheduleRecord, *, expected_version: int | None) -> bool:
        """Write ``record``; ``True`` if it was written.

        ``expected_version=None`` creates it: nothing is written if a schedule has its id or
        its ``(source, key)``. Otherwise the stored schedule with its id is replaced, only if
        its version is ``expected_version`` (its source and key never change).
        """
        ...

    async def get_schedule(
        self, schedule_id: str, *, sources: frozenset[str] | None
    ) -> ScheduleRecord | None:
        """The schedule, if it exists and (with ``sources``) belongs to one of them."""
        ...

    async def find_schedule(self, source: str, key: str) -> ScheduleRecord | None:
        """The schedule of ``source`` named ``key``."""
        ...

    async def list_schedules(
        self, query: ScheduleQuery, limit: int, after: SchedulePosition | None
    ) -> SchedulePage:
        """Up to ``limit`` schedules matching ``query`` in ``(source, key)`` order, strictly
        after ``after``; ``next_after`` is the last one's position when more match."""
        ...

    async def delete_schedule(self, schedule_id: str, *, sources: frozenset[str] | None) -> bool:
        """Delete the schedule (of ``sources``); ``False`` if there was none. Its occurrences
        stay: they are events like any other."""
        ...

    async def due_schedules(self, until: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` ACTIVE schedules whose ``next_run_at`` is at or before ``until``,
        earliest first. Served by an index on ``next_run_at``: never a scan of every schedule."""
        ...

    async def materialise(self, batch: Sequence[Materialisation]) -> list[str]:
        """Write each plan of ``batch`` whose schedule still has its expected version, with
        its events (deduplicated as :meth:`Submissions.insert_many` does), all in one
        transaction; the ids of the schedules written."""
        ...

    async def count_schedules(self, sources: frozenset[str] | None) -> Mapping[ScheduleState, int]:
        """How many schedules are in each state (with ``sources``: of those only)."""
        ...

    async def schedule_occurrences(
        self, schedule_id: str, limit: int, before: Cursor | None
    ) -> EventPage:
        """Up to ``limit`` events whose ``extra`` names the schedule, newest first: by
        ``(scheduled_at, id)`` descending, strictly before ``before``."""
        ...


def encode_template(template: Mapping[str, object]) -> str:
    """A schedule's event template as JSON text: its plain values as they are, its raw JSON
    values (bytes: the payload) as text beside them, so they come back byte for byte."""
    plain = {name: value for name, value in template.items() if not isinstance(value, bytes)}
    raw = {
        name: value.decode("utf-8") for name, value in template.items() if isinstance(value, bytes)
    }
    return json.dumps({"fields": plain, "raw": raw}, separators=(",", ":"), allow_nan=False)


def decode_template(text: str) -> dict[str, object]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a stored event template is not a JSON object")
    fields: dict[str, object] = dict(value.get("fields", {}))
    for name, raw in value.get("raw", {}).items():
        fields[name] = str(raw).encode("utf-8")
    return fields
