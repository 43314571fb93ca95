"""The event store, split by role: each port a handful of methods, each adapter all of them.

:class:`StoreAdapter` is what an adapter implements (SQLite, PostgreSQL, in-memory). Services
never call an adapter directly: :class:`timefuse.service.store.Store` wraps it with the rules
(argument checks, status transitions, lease fencing), checked once for every adapter.
"""

from __future__ import annotations

from typing import Protocol

from timefuse.domain.cursor import Cursor
from timefuse.ports.store.actions import OperatorActions
from timefuse.ports.store.capabilities import (
    Capabilities,
    Migrates,
    PlansStorage,
    ReadsFromReplica,
    SharesLimits,
    WatchesDue,
)
from timefuse.ports.store.claims import Claims
from timefuse.ports.store.coordination import Coordination
from timefuse.ports.store.errors import StoreError, StoreRefused, StoreUnavailable
from timefuse.ports.store.outcomes import Outcomes
from timefuse.ports.store.queries import Queries
from timefuse.ports.store.records import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    DestinationRule,
    DueFilter,
    EventPage,
    EventQuery,
    MoveDueResult,
    NextDue,
    OutcomeUpdate,
    RedeliverResult,
    SharedBreaker,
    SharedLimits,
    WorkerBeat,
    WorkerRecord,
    source_set,
)
from timefuse.ports.store.retention import Retention
from timefuse.ports.store.schedules import (
    Materialisation,
    SchedulePage,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
    Schedules,
)
from timefuse.ports.store.submissions import Submissions


class Lifecycle(Protocol):
    async def open(self) -> None:
        """Connect and prepare (create the schema where the adapter owns it)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise :class:`StoreUnavailable` otherwise."""
        ...


class StoreAdapter(
    Lifecycle,
    Submissions,
    Claims,
    Outcomes,
    Coordination,
    Queries,
    OperatorActions,
    Retention,
    Schedules,
    Protocol,
):
    """Every role of the store, and the adapter's declared abilities."""

    @property
    def capabilities(self) -> Capabilities: ...


__all__ = [
    "AmendBasis",
    "AmendResult",
    "AttemptRecord",
    "CancelResult",
    "Capabilities",
    "ClaimBatch",
    "ClaimRef",
    "ClaimRequest",
    "Claims",
    "Coordination",
    "Cursor",
    "DestinationRule",
    "DueFilter",
    "EventPage",
    "EventQuery",
    "Lifecycle",
    "Materialisation",
    "Migrates",
    "MoveDueResult",
    "NextDue",
    "OperatorActions",
    "OutcomeUpdate",
    "Outcomes",
    "PlansStorage",
    "Queries",
    "ReadsFromReplica",
    "RedeliverResult",
    "Retention",
    "SchedulePage",
    "SchedulePosition",
    "ScheduleQuery",
    "ScheduleRecord",
    "Schedules",
    "SharedBreaker",
    "SharedLimits",
    "SharesLimits",
    "StoreAdapter",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "Submissions",
    "WatchesDue",
    "WorkerBeat",
    "WorkerRecord",
    "source_set",
]
