"""Single submissions that arrive together are made durable together (group commit).

Stored one by one, each submission is a transaction of its own, committed before its answer;
under many concurrent clients they queue behind one another for the store (SQLite writes one
transaction at a time). :class:`SubmissionGroups` stores the submissions that arrive while a
group is being stored as the next group, through the batch path (one look-up of stored
twins, one transaction), and answers each only once its group is durable. A lone submission
waits for nothing: it is a group of one, stored at once.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from timefuse.domain.event import Event
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import StoreRefused
from timefuse.service.quotas import QuotaExceeded, QuotaRefusal
from timefuse.service.submission import Accepted

# The most submissions stored in one transaction, as many as a batch request may hold.
GROUP_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class GroupAnswers:
    """What became of a group's events, by their position in the group: accepted, or
    refused by their source's quota."""

    accepted: Sequence[tuple[int, Accepted]]
    refused: Sequence[tuple[int, QuotaRefusal]]


StoreGroup = Callable[[list[Event]], Awaitable[GroupAnswers]]


class SubmissionGroups:
    """:param store_group: stores a group durably (or raises), answering each of its events."""

    def __init__(self, store_group: StoreGroup, *, limit: int = GROUP_LIMIT) -> None:
        self._store_group = store_group
        self._limit = limit
        self._waiting: list[tuple[Event, asyncio.Future[Accepted]]] = []
        self._storing: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> Accepted:
        """``event``'s answer once the group it joined is durable; the group's error if
        storing it failed, :class:`QuotaExceeded` if its source's quota refused it.

        A caller that stops waiting (a time-out) takes its event out of the next group; one
        already being stored may still be stored, as a timed-out submission may be.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Accepted] = loop.create_future()
        self._waiting.append((event, answer))
        if self._storing is None or self._storing.get_loop() is not loop:
            # (A task of a loop that was closed under it never finishes: this loop starts anew.)
            self._waiting[:-1] = [(e, a) for e, a in self._waiting[:-1] if a.get_loop() is loop]
            # A context of its own: the first caller's log context is not the group's.
            self._storing = asyncio.create_task(
                self._store_groups(), name="timefuse-submission-groups",
                context=contextvars.Context(),
            )  # fmt: skip
        return await answer

    async def _store_groups(self) -> None:
        group: list[tuple[Event, asyncio.Future[Accepted]]] = []
        try:
            while self._waiting:
                taken = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                group = [(event, answer) for event, answer in taken if not answer.done()]
                if group:
                    await self._store(group)
                group = []
        finally:
            self._storing = None
            # Cancelled (the server stopping): nobody is left to store what still waits.
            stopped = BufferUnavailable("the server is stopping; the submission was not stored")
            for _, answer in group + self._waiting:
                if not answer.done():
                    answer.set_exception(stopped)
            self._waiting.clear()

    async def _store(self, group: list[tuple[Event, asyncio.Future[Accepted]]]) -> None:
        try:
            answers = await self._store_group([event for event, _ in group])
        except StoreRefused as exc:
            if len(group) > 1:
                # One submission's values refused fail the transaction of all: the halves are
                # stored apart, down to the one at fault, so only it is refused, not the
                # clients beside it.
                half = len(group) // 2
                await self._store(group[:half])
                await self._store(group[half:])
                return
            _fail(group, exc)
            return
        except Exception as exc:
            _fail(group, exc)
            return
        for index, accepted in answers.accepted:
            if not group[index][1].done():
                group[index][1].set_result(accepted)
        for index, refusal in answers.refused:
            if not group[index][1].done():
                group[index][1].set_exception(QuotaExceeded(refusal))
        for _, answer in group:
            if not answer.done():  # a group's every event is answered; this is a fault
                answer.set_exception(RuntimeError("a submission of a group was not answered"))


def _fail(group: list[tuple[Event, asyncio.Future[Accepted]]], exc: Exception) -> None:
    for _, answer in group:
        if not answer.done():
            answer.set_exception(exc)
