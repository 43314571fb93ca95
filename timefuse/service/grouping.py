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
from timefuse.service.quotas import QuotaExceeded, QuotaRefusal
from timefuse.service.submission import Accepted

# The most submissions stored in one transaction, as many as a batch request may hold.
GROUP_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class GroupAnswers:
    """What became of a group's events, by their position in the group: accepted, refused
    by their source's quota, or failed on their own (the store refused a value of theirs,
    or a part of the group they were in could not be stored)."""

    accepted: Sequence[tuple[int, Accepted]]
    refused: Sequence[tuple[int, QuotaRefusal]] = ()
    failed: Sequence[tuple[int, Exception]] = ()


StoreGroup = Callable[[list[Event]], Awaitable[GroupAnswers]]
Waiting = tuple[Event, "asyncio.Future[Accepted]"]


class SubmissionGroups:
    """:param store_group: stores a group durably (or raises), answering each of its events.
    :param deadline: the longest one group may take to store (``None``: unbounded); past it
        the group's submissions are answered :class:`BufferUnavailable` and the next group
        is stored, so one stuck store call can't hold every later submission.
    """

    def __init__(
        self, store_group: StoreGroup, *, limit: int = GROUP_LIMIT, deadline: float | None = None
    ) -> None:
        self._store_group = store_group
        self._limit = limit
        self._deadline = deadline
        self._waiting: list[Waiting] = []
        self._storing: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> Accepted:
        """``event``'s answer once the group it joined is durable; its own failure or its
        group's if storing it failed, :class:`QuotaExceeded` if its source's quota refused it.

        A caller that stops waiting (a time-out) takes its event out of the next group; one
        already being stored may still be stored, as a timed-out submission may be.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Accepted] = loop.create_future()
        self._waiting.append((event, answer))
        storing = self._storing
        if storing is None or storing.done() or storing.get_loop() is not loop:
            # (A task of a loop that was closed under it never finishes: this loop starts anew.)
            self._waiting[:-1] = [(e, a) for e, a in self._waiting[:-1] if a.get_loop() is loop]
            # A context of its own: the first caller's log context is not the group's.
            self._storing = asyncio.create_task(
                self._store_groups(), name="timefuse-submission-groups",
                context=contextvars.Context(),
            )  # fmt: skip
        return await answer

    async def _store_groups(self) -> None:
        group: list[Waiting] = []
        try:
            while self._waiting:
                taken = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                group = [(event, answer) for event, answer in taken if not answer.done()]
                if group:
                    await self._store(group)
                group = []
        finally:
            # Cancelled (the server stopping): nobody is left to store what still waits.
            stopped = BufferUnavailable("the server is stopping; the submission was not stored")
            _fail(group, stopped)
            if self._storing is asyncio.current_task():
                self._storing = None
                _fail(self._waiting, stopped)
                self._waiting.clear()

    async def _store(self, group: list[Waiting]) -> None:
        bound = asyncio.timeout(self._deadline)
        try:
            async with bound:
                answers = await self._store_group([event for event, _ in group])
        except Exception as exc:
            if isinstance(exc, TimeoutError) and bound.expired():
                exc = BufferUnavailable(
                    f"the event store did not confirm the submission within {self._deadline:g} s"
                )
            _fail(group, exc)
            return
        for index, accepted in answers.accepted:
            _settle(group[index][1], accepted)
        for index, refusal in answers.refused:
            _settle(group[index][1], QuotaExceeded(refusal))
        for index, failure in answers.failed:
            _settle(group[index][1], failure)
        # Every event of a group is answered; one left out would be a fault of the caller's.
        _fail(group, RuntimeError("a submission of a group was not answered"))


def _settle(answer: asyncio.Future[Accepted], outcome: Accepted | Exception) -> None:
    if answer.done():
        return
    if isinstance(outcome, Exception):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


def _fail(group: list[Waiting], exc: Exception) -> None:
    for _, answer in group:
        _settle(answer, exc)
