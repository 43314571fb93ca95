"""The values that cross the store ports: claims, outcomes, queries, pages, workers."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """One claim of one event: whose it is and its token.

    ``claim`` is the event's ``claim_count`` as that claim left it. It never repeats for an
    event, so a write quoting it applies to that claim only: not to a later claim of the same
    event, by another worker or by the same one after its lease expired.
    """

    event_id: str
    claim: int
    worker: str

    @classmethod
    def of(cls, event: Event) -> ClaimRef:
        """The claim ``event`` (as a claim returned it) is under."""
        return cls(event.id, event.claim_count, event.locked_by or "")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt, kept as the event's history.

    ``attempt`` is the attempt's number in its delivery round: the event's ``attempts`` when it
    was claimed, which starts again from 1 after a redelivery. ``sequence`` is the record's
    place in the event's whole history, from 1, never reused: the store assigns it when it
    keeps the record (callers building a record leave it 0).
    """

    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: OutcomeKind
    status_code: int | None
    error: str | None
    worker: str
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class OutcomeUpdate:
    """Where an attempt left an event, written back under the claim ``ref``.

    ``status``, ``retry_count`` and ``last_error`` are written as given (``None`` clears the
    last error). A retry (``status`` PENDING) is due ``retry_delay_seconds`` after the store's
    own now; other outcomes keep the last due time. ``executed_at`` is written when not
    ``None`` (a success), else the time of any earlier successful delivery stays.

    ``callback`` is the notice of the event's end (a new event, see
    :mod:`timefuse.domain.callback`), inserted in the same transaction as the outcome when,
    and only when, the outcome applies. Its id is derived from the event's id and claim, so
    a notice already stored (a write made again) stays as it is.
    """

    ref: ClaimRef
    status: EventStatus
    retry_count: int
    last_error: str | None
    retry_delay_seconds: float | None
    executed_at: datetime | None
    attempt: AttemptRecord
    callback: Event | None = None

    @property
    def event_id(self) -> str:
        return self.ref.event_id


@dataclass(frozen=True, slots=True)
class DueFilter:
    """Which due events a dispatcher wants: the types it can deliver, the destinations it can
    send to now. ``delivery_types=None`` means any type."""

    delivery_types: frozenset[str] | None = None
    excluded_destinations: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """A destination's limits as the store enforces them for every process together.

    ``concurrency``: claimed events of the destination at once (0: no cap); ``rate`` and
    ``burst``: a token bucket (``rate`` 0: none), tokens taken at claim time.
    """

    concurrency: int = 0
    rate: float = 0.0
    burst: int = 1


@dataclass(frozen=True, slots=True)
class SharedLimits:
    """What a claim must respect across processes (stores that can share limits).

    :param overrides: rules by destination key, or by bare host for every port of it.
    :param type_defaults: rules by delivery type, for destinations with no override.
    :param mine: per destination, the events this worker already has in flight or waiting
        (its own claims still PROCESSING are otherwise not counted: it knows them better).
    :param breaker_cooldown_seconds: how long an open breaker holds before one probe.
    """

    default: DestinationRule
    overrides: Mapping[str, DestinationRule] = field(default_factory=dict)
    type_defaults: Mapping[str, DestinationRule] = field(default_factory=dict)
    mine: Mapping[str, int] = field(default_factory=dict)
    breaker_cooldown_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one claim asks for.

    At most ``limit`` events; of one destination at most its entry in ``budgets``, or
    ``default_budget`` for a destination not listed (``None``: no bound per destination).
    Earliest due first.
    """

    worker: str
    limit: int
    lease_seconds: float
    due: DueFilter = field(default_factory=DueFilter)
    budgets: Mapping[str, int] = field(default_factory=dict)
    default_budget: int | None = None
    shared: SharedLimits | None = None


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """The events one claim took (PROCESSING, each under its own token), earliest due first,
    and the store's clock when it took them. ``probes``: the events claimed as the one probe
    of a destination whose shared breaker is open (shared limits only)."""

    events: list[Event]
    store_now: datetime
    probes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SharedBreaker:
    """A destination's breaker as every process sees it: open for how long (on the store's
    clock), and which worker holds its probe, if one does."""

    key: str
    open_seconds: float
    probe_by: str | None


@dataclass(frozen=True, slots=True)
class NextDue:
    """The earliest due time of a PENDING event a filter admits (``None``: none), and the
    store's clock at the moment of the answer, so the caller can wait on its own clock."""

    at: datetime | None
    store_now: datetime


class CancelResult(enum.Enum):
    CANCELLED = "CANCELLED"
    NOT_FOUND = "NOT_FOUND"
    NOT_PENDING = "NOT_PENDING"


@dataclass(frozen=True, slots=True)
class AmendBasis:
    """The stored state a change of an event was computed from: the change applies only while
    the event is still in it.

    ``version`` moves with every change a client makes. An attempt (a claim, then its outcome,
    a hand-back or lease recovery) and a moved due time change the event without a new
    version, so ``claim_count`` and ``next_attempt_at`` are compared too: a change computed
    before either would write back the due time (and history) it read, skipping a backoff.
    """

    version: int
    claim_count: int
    next_attempt_at: datetime

    @classmethod
    def of(cls, event: Event) -> AmendBasis:
        """The basis of a change computed from ``event`` as it was read."""
        return cls(event.version, event.claim_count, event.next_attempt_at)


class AmendResult(enum.Enum):
    """How a change of a stored event went."""

    AMENDED = "AMENDED"
    # Not in a status the change applies to, or no longer in the state it was computed from.
    NOT_AMENDABLE = "NOT_AMENDABLE"
    # The new scheduled_at would give the event the dedup key of another one.
    DUPLICATE = "DUPLICATE"


class MoveDueResult(enum.Enum):
    MOVED = "MOVED"
    NOT_FOUND = "NOT_FOUND"
    NOT_PENDING = "NOT_PENDING"


class RedeliverResult(enum.Enum):
    REDELIVERED = "REDELIVERED"
    NOT_FOUND = "NOT_FOUND"
    NOT_REDELIVERABLE = "NOT_REDELIVERABLE"


def source_set(sources: Collection[str] | None) -> frozenset[str] | None:
    """``sources`` as a set (``None`` stays ``None``: no filter); a bare string is refused.

    A string is a collection of one-character strings, so ``sources="billing"`` would
    otherwise filter on the sources ``"b"``, ``"i"``...
    """
    if sources is None:
        return None
    if isinstance(sources, str):
        raise TypeError("sources must be a collection of source names, not one string")
    return frozenset(sources)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events a listing returns, and in which order; every criterion given must hold.

    :param status: only events in this status (default: any).
    :param sources: only events from these sources; an empty collection matches nothing
        (default ``None``: any source).
    :param scheduled_from: only events scheduled at or after this instant.
    :param scheduled_to: only events scheduled before this instant (half-open: an event
        scheduled exactly at ``scheduled_to`` is left out, so consecutive windows don't
        overlap).
    :param delivery_type: only events of this delivery type.
    :param destination_key: only events whose ``destination_key`` is this one (``host:port``,
        or ``<delivery type>:<destination>``; see :mod:`timefuse.domain.destination`).
    :param destination_host: only events whose ``destination_key`` is this host with any port
        (the host written as keys write it: lower case, IPv6 in brackets).
    :param destination_prefix: only events whose destination, as submitted, starts with this
        text (compared character by character, case included).
    :param descending: list the latest scheduled first (``(scheduled_at, id)`` descending).
    :param examine_at_most: bounds a page's work when criteria no index holds are given. The
        *candidates* are the events that match ``status`` and the scheduled window, in listing
        order from the cursor; the other criteria (sources, delivery type, destination) are
        checked on each. With this bound a page looks at no more than this many candidates:
        when they run out before the page is full, the page holds the matches among them (maybe
        none) and its cursor is the position of the last candidate looked at. ``None``: no
        bound, a page looks as far as it must.
    """

    status: EventStatus | None = None
    sources: Collection[str] | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None
    delivery_type: str | None = None
    destination_key: str | None = None
    destination_host: str | None = None
    destination_prefix: str | None = None
    descending: bool = False
    examine_at_most: int | None = None

    def __post_init__(self) -> None:
        # Any collection is accepted (a list parsed from a query string); a frozenset is kept,
        # so queries stay hashable and a caller's later change to its list can't leak in.
        object.__setattr__(self, "sources", source_set(self.sources))
        for moment in (self.scheduled_from, self.scheduled_to):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"an event query needs timezone-aware datetimes, got {moment!r}")
        for name in ("delivery_type", "destination_key", "destination_host", "destination_prefix"):
            if getattr(self, name) == "":
                raise ValueError(f"an event query's {name} is None or a non-empty text")
        if self.examine_at_most is not None and self.examine_at_most < 1:
            raise ValueError(f"examine_at_most must be at least 1, got {self.examine_at_most}")

    @property
    def checked_on_candidates(self) -> bool:
        """Whether criteria beyond status and time are given (see ``examine_at_most``)."""
        return (
            self.sources is not None
            or self.delivery_type is not None
            or self.destination_key is not None
            or self.destination_host is not None
            or self.destination_prefix is not None
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a listing, and where the next one starts (``None``: this is the last)."""

    events: list[Event]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What a process says of itself when it heartbeats."""

    worker: str
    roles: tuple[str, ...]
    started_at: datetime
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A process as the store last heard of it; ``silent_seconds`` on the store's clock."""

    worker: str
    roles: tuple[str, ...]
    started_at: datetime
    last_seen: datetime
    silent_seconds: float
    in_flight: int
