"""Per-destination limits: a concurrency cap, a token bucket and a circuit breaker per receiver.

A herd due at midnight must not flatten one receiver, and a slow receiver must not starve the
rest. The gate owns, per destination, what is in flight, a short queue of claimed events
waiting for a slot or a token, and the timer that starts or hands them back:

* Before a claim, :meth:`DestinationGate.claim_budget` says how many events of each known
  destination it may start within ``hold_seconds``; a destination that can start none (an open
  breaker, a full queue) is left out of the claim altogether, so its backlog never crowds out
  the others' events and is never claimed only to be handed back.
* A claimed event starts at once, or waits in its destination's queue. No event waits longer
  than ``hold_seconds`` from its claim: one that would is handed back uncounted, well inside
  its lease, and no token is spent on it.

Times are seconds on the monotonic clock the gate is given; timers are set relative to it.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from timefuse.domain.breaker import Admission, BreakerState, CircuitBreaker
from timefuse.domain.destination import destination_limit_keys
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.ratelimit import TokenBucket
from timefuse.ports.store import ClaimRef, DestinationRule, SharedBreaker, SharedLimits


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    """Limits for one destination. ``0`` means unlimited for ``concurrency`` and ``rate``;
    ``burst`` 0 means the rate's worth of one second (at least 1); ``queue`` 0 means as many
    waiting events as the destination starts within the gate's hold time."""

    concurrency: int = 100
    rate: float = 0.0
    burst: int = 0
    queue: int = 0


@dataclass(frozen=True, slots=True)
class GateSettings:
    default: DestinationLimits = DestinationLimits()
    overrides: Mapping[str, DestinationLimits] = field(default_factory=dict)
    # Per delivery type, the limits of a destination with no override (else ``default``).
    type_defaults: Mapping[str, DestinationLimits] = field(default_factory=dict)
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    # The longest a claimed event waits for its destination before it is handed back.
    hold_seconds: float = 5.0
    # Handed-back events come back after at least this long.
    min_defer_seconds: float = 0.05
    # A destination with nothing in flight, waiting or failing for this long is forgotten.
    idle_seconds: float = 300.0
    # The store enforces caps, rates and breakers for every process together (claims ask for
    # no more than they may start), so the gate starts what it is given and keeps no limit of
    # its own; it still judges receivers and publishes its breakers' changes.
    shared: bool = False


class ClaimBudget:
    """What the next claim may take: destinations to leave, a budget for the others."""

    __slots__ = ("budgets", "default", "excluded")

    def __init__(
        self, excluded: frozenset[str], budgets: dict[str, int], default: int | None
    ) -> None:
        self.excluded = excluded
        self.budgets = budgets
        self.default = default


@dataclass(slots=True)
class Claimed:
    """A claimed event on its way through this process.

    ``claimed_at`` is when its claim was asked for, on the gate's monotonic clock: the lease
    runs from no earlier than that, whatever the store's or this machine's wall clock says.
    """

    event: Event
    ref: ClaimRef
    key: str
    claimed_at: float

    @classmethod
    def of(cls, event: Event, claimed_at: float) -> Claimed:
        return cls(event, ClaimRef.of(event), event.destination_key, claimed_at)


class HandBackReason(enum.Enum):
    BREAKER = "breaker"
    WAIT = "wait"
    SHUTDOWN = "shutdown"


Start = Callable[[Claimed], None]
HandBack = Callable[[Claimed, float, HandBackReason], None]
BreakerChange = Callable[[str, bool], None]

# A breaker this process opened is not closed by the shared state for this long: the
# publication of its opening may still be on its way.
PUBLISH_GRACE_SECONDS = 2.0


@dataclass
class _Destination:
    limits: DestinationLimits
    breaker: CircuitBreaker
    bucket: TokenBucket | None
    in_flight: int = 0
    waiting: deque[Claimed] = field(default_factory=deque)
    typical_seconds: float | None = None  # moving average of recent delivery durations
    probe_id: str | None = None  # the event probing a half-open breaker
    timer: asyncio.TimerHandle | None = None
    last_active: float = 0.0
    excluded: bool = False  # left out of the last claim
    opened_here: float = -math.inf  # when this process last opened the breaker


class DestinationGate:
    """Starts claimed events within their destinations' limits, or hands them back.

    :param start: launches an attempt (the gate has counted it in flight).
    :param hand_back: returns a claimed event to the store, due after the delay given.
    :param on_room: called when a destination left out of claims can take events again.
    :param on_breaker: called with a destination's key and ``True`` when its breaker opens
        here, ``False`` when it closes here (to share it with the other processes).
    """

    def __init__(
        self,
        settings: GateSettings,
        *,
        start: Start,
        hand_back: HandBack,
        monotonic: Callable[[], float],
        on_room: Callable[[], None] = lambda: None,
        on_breaker: BreakerChange = lambda key, opened: None,
    ) -> None:
        self._settings = settings
        self._start = start
        self._hand_back = hand_back
        self._now = monotonic
        self._on_room = on_room
        self._on_breaker = on_breaker
        self._destinations: dict[str, _Destination] = {}
        # Destinations whose shared breaker is open and not yet up for a probe (or probed by
        # another process): left out of claims, until the monotonic time given.
        self._shared_open: dict[str, float] = {}
        self._waiting = 0
        self._in_flight = 0
        self._closed = False

    @property
    def occupied(self) -> int:
        """Events in flight or waiting, all destinations together."""
        return self._in_flight + self._waiting

    def limits_for(self, event: Event) -> DestinationLimits:
        """The limits an operator set for the event's receiver (its ``host:port``, else its
        host), else its delivery type's, else the default."""
        settings = self._settings
        for key in destination_limit_keys(event.delivery_type, event.destination):
            found = settings.overrides.get(key)
            if found is not None:
                return found
        return settings.type_defaults.get(event.delivery_type, settings.default)

    def _get(self, claimed: Claimed) -> _Destination:
        key = claimed.key
        found = self._destinations.get(key)
        if found is None:
            limits = self.limits_for(claimed.event)
            bucket = None
            if limits.rate > 0 and not self._settings.shared:
                bucket = TokenBucket(limits.rate, max(1, limits.burst or math.ceil(limits.rate)))
                bucket.updated = self._now()
            breaker = CircuitBreaker(
                self._settings.breaker_failures, self._settings.breaker_cooldown_seconds
            )
            found = self._destinations[key] = _Destination(limits, breaker, bucket)
        found.last_active = self._now()
        return found

    # -- claims ------------------------------------------------------------------------------

    def claim_budget(self) -> ClaimBudget:
        """Per destination, how many more events a claim may take now."""
        now = self._now()
        if self._settings.shared:
            return self._shared_budget(now)
        excluded: set[str] = set()
        budgets: dict[str, int] = {}
        for key, dest in list(self._destinations.items()):
            if self._idle(dest, now):
                del self._destinations[key]
                continue
            budget = self._budget(dest, now)
            dest.excluded = budget <= 0
            if dest.excluded:
                excluded.add(key)
            else:
                budgets[key] = budget
        for key, limits in self._settings.overrides.items():
            if key not in self._destinations:
                budgets[key] = self._fresh_budget(limits)
        return ClaimBudget(frozenset(excluded), budgets, self._fresh_budget(self._settings.default))

    def _shared_budget(self, now: float) -> ClaimBudget:
        excluded = {key for key, until in self._shared_open.items() if now < until}
        for key, dest in list(self._destinations.items()):
            if self._idle(dest, now):
                del self._destinations[key]
            elif dest.breaker.state is BreakerState.OPEN and now < dest.breaker.reopens_at():
                excluded.add(key)
        return ClaimBudget(frozenset(excluded), {}, None)

    def shared_limits(self) -> SharedLimits:
        """The limits the store enforces for every process, and what this one holds."""
        settings = self._settings
        return SharedLimits(
            default=_rule(settings.default),
            overrides={key: _rule(limits) for key, limits in settings.overrides.items()},
            type_defaults={name: _rule(limits) for name, limits in settings.type_defaults.items()},
            mine={
                key: dest.in_flight + len(dest.waiting)
                for key, dest in self._destinations.items()
                if dest.in_flight or dest.waiting
            },
            breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
        )

    def sync_breakers(self, shared: Sequence[SharedBreaker]) -> None:
        """Follow the shared breakers: open here what another process opened (for as long as
        it has been open), close here what is closed for everyone."""
        now = self._now()
        cooldown = self._settings.breaker_cooldown_seconds
        # Left out of claims while cooling down or while another process probes it.
        self._shared_open = {
            b.key: now + 1.0 if b.probe_by else now - b.open_seconds + cooldown for b in shared
        }
        open_seconds = {b.key: b.open_seconds for b in shared}
        for key, dest in self._destinations.items():
            breaker = dest.breaker
            if key in open_seconds:
                if breaker.state is BreakerState.CLOSED:
                    breaker.state = BreakerState.OPEN
                    breaker.opened_at = now - open_seconds[key]
                    self._pump(key, dest)
            elif (
                breaker.state is not BreakerState.CLOSED
                and dest.probe_id is None
                and now - dest.opened_here > PUBLISH_GRACE_SECONDS
            ):
                breaker.reset()
                self._pump(key, dest)

    def _fresh_budget(self, limits: DestinationLimits) -> int:
        """What a claim may take for a destination with nothing known of it yet: one round."""
        startable = limits.concurrency or 0
        if limits.rate > 0:
            rate_bound = max(1, limits.burst or math.ceil(limits.rate))
            startable = min(startable, rate_bound) if startable else rate_bound
        if limits.queue:
            startable = min(startable, limits.queue) if startable else limits.queue
        return max(1, startable) if startable else 1_000_000

    def _budget(self, dest: _Destination, now: float) -> int:
        breaker = dest.breaker
        if breaker.state is BreakerState.OPEN and now < breaker.reopens_at():
            return 0
        if breaker.state is not BreakerState.CLOSED:
            # Half-open (or due to be): the probe alone, and only while none is out.
            return 0 if dest.probe_id is not None or dest.waiting else 1
        limits = dest.limits
        startable = math.inf
        if limits.concurrency:
            startable = max(0, limits.concurrency - dest.in_flight)
        if dest.bucket is not None:
            startable = min(startable, dest.bucket.available(now))
        startable += self._pace(dest) * self._settings.hold_seconds * 0.8
        if limits.queue:
            startable = min(startable, limits.queue + max(0, limits.concurrency - dest.in_flight))
        budget = startable - len(dest.waiting)
        return 1_000_000 if budget == math.inf else max(0, math.floor(budget))

    def _pace(self, dest: _Destination) -> float:
        """Events per second the destination starts once its slots and tokens are used."""
        limits = dest.limits
        pace = math.inf
        if limits.concurrency:
            typical = dest.typical_seconds
            # Before a delivery has finished, assume a round of the cap per hold time.
            pace = limits.concurrency / max(
                typical if typical is not None else self._settings.hold_seconds, 1e-3
            )
        if limits.rate > 0:
            pace = min(pace, limits.rate)
        return pace

    def _idle(self, dest: _Destination, now: float) -> bool:
        return (
            not dest.in_flight
            and not dest.waiting
            and dest.breaker.state is BreakerState.CLOSED
            and not dest.breaker.failures
            and now - dest.last_active > self._settings.idle_seconds
        )

    # -- admission ---------------------------------------------------------------------------

    def admit(self, claimed: Claimed, *, probe: bool = False) -> None:
        """Start a claimed event now, queue it for its destination, or hand it back.

        ``probe``: the store gave this event as its destination's one probe (shared limits).
        """
        dest = self._get(claimed)
        now = self._now()
        if self._settings.shared:
            self._admit_shared(dest, claimed, probe)
            return
        admission = dest.breaker.admit(now)
        if admission is Admission.REJECT:
            self._hand_back(claimed, self._breaker_delay(dest, now), HandBackReason.BREAKER)
            return
        if admission is Admission.PROBE:
            dest.probe_id = claimed.event.id
            self._launch(dest, claimed)
            return
        if not dest.waiting and self._can_start(dest, now):
            self._launch(dest, claimed)
            return
        dest.waiting.append(claimed)
        self._waiting += 1
        self._pump(claimed.key, dest)

    def _admit_shared(self, dest: _Destination, claimed: Claimed, probe: bool) -> None:
        # The store let this event through its shared limits and breaker: start it. A breaker
        # open here but closed for everyone (a probe elsewhere succeeded) closes here too.
        breaker = dest.breaker
        if probe:
            breaker.state = BreakerState.HALF_OPEN
            breaker.probing = True
            dest.probe_id = claimed.event.id
        elif breaker.state is not BreakerState.CLOSED and dest.probe_id is None:
            breaker.reset()
        self._launch(dest, claimed)

    def finished(self, claimed: Claimed, outcome: DeliveryOutcome, seconds: float) -> None:
        """An attempt admitted by the gate ended: free its slot, judge the receiver."""
        dest = self._destinations.get(claimed.key)
        self._in_flight -= 1
        if dest is None:
            return
        dest.in_flight -= 1
        dest.last_active = self._now()
        typical = dest.typical_seconds
        dest.typical_seconds = seconds if typical is None else typical + 0.1 * (seconds - typical)
        is_probe = dest.probe_id == claimed.event.id
        if is_probe:
            dest.probe_id = None
        before = dest.breaker.state
        dest.breaker.record(
            succeeded=outcome.kind is OutcomeKind.SUCCESS,
            retriable=outcome.kind is OutcomeKind.RETRIABLE,
            now=self._now(),
            current=is_probe or dest.breaker.state is BreakerState.CLOSED,
        )
        self._breaker_changed(claimed.key, dest, before)
        self._pump(claimed.key, dest)

    def _breaker_changed(self, key: str, dest: _Destination, before: BreakerState) -> None:
        after = dest.breaker.state
        if after is BreakerState.OPEN and before is not BreakerState.OPEN:
            dest.opened_here = self._now()
            self._on_breaker(key, True)
        elif after is BreakerState.CLOSED and before is not BreakerState.CLOSED:
            self._on_breaker(key, False)

    def abandoned(self, claimed: Claimed) -> None:
        """An attempt the gate started never ran (its type vanished, a shutdown): free the
        slot, judge nothing, and let another event probe if this one was the probe."""
        dest = self._destinations.get(claimed.key)
        self._in_flight -= 1
        if dest is None:
            return
        dest.in_flight -= 1
        if dest.probe_id == claimed.event.id:
            dest.probe_id = None
            dest.breaker.probing = False
        self._pump(claimed.key, dest)

    def _launch(self, dest: _Destination, claimed: Claimed) -> None:
        dest.in_flight += 1
        self._in_flight += 1
        self._start(claimed)

    def _can_start(self, dest: _Destination, now: float) -> bool:
        if self._settings.shared:
            return True
        cap = dest.limits.concurrency
        if cap and dest.in_flight >= cap:
            return False
        return dest.bucket is None or dest.bucket.try_take(now)

    def _pump(self, key: str, dest: _Destination) -> None:
        """Start what ``dest`` can take now, hand back what waited too long, set its timer."""
        if dest.timer is not None:
            dest.timer.cancel()
            dest.timer = None
        now = self._now()
        hold = self._settings.hold_seconds
        while dest.waiting:
            head = dest.waiting[0]
            if dest.breaker.state is not BreakerState.CLOSED:
                self._release_waiting(dest, self._breaker_delay(dest, now), HandBackReason.BREAKER)
                break
            if now >= head.claimed_at + hold:
                dest.waiting.popleft()
                self._waiting -= 1
                self._hand_back(head, self._wait_delay(dest), HandBackReason.WAIT)
                continue
            if not self._can_start(dest, now):
                break
            dest.waiting.popleft()
            self._waiting -= 1
            self._launch(dest, head)
        if dest.waiting and not self._closed:
            deadline = dest.waiting[0].claimed_at + hold - now
            token = dest.bucket.wait_seconds(now) if dest.bucket is not None else math.inf
            delay = max(0.0, min(deadline, token))
            dest.timer = asyncio.get_running_loop().call_later(delay, self._pump, key, dest)
        if dest.excluded and self._budget(dest, now) >= self._room_threshold(dest):
            dest.excluded = False
            self._on_room()

    def _room_threshold(self, dest: _Destination) -> float:
        # A destination left out of claims comes back once it can take a worthwhile batch,
        # not at every freed slot (a claim per completion would churn the store).
        return max(1.0, min(100.0, self._pace(dest) * self._settings.hold_seconds * 0.4))

    def _release_waiting(self, dest: _Destination, delay: float, reason: HandBackReason) -> None:
        while dest.waiting:
            claimed = dest.waiting.popleft()
            self._waiting -= 1
            self._hand_back(claimed, delay, reason)

    def _breaker_delay(self, dest: _Destination, now: float) -> float:
        # Held back due at once, not at the breaker's probe time: claims leave the destination
        # out while its breaker is open, so these wait in the store with its other events, and
        # a reset (or a successful probe) lets every one of them be claimed at once.
        return self._settings.min_defer_seconds

    def _wait_delay(self, dest: _Destination) -> float:
        """About how long the destination's queue takes to drain at its pace."""
        pace = self._pace(dest)
        wait = len(dest.waiting) / pace if pace != math.inf else 0.0
        return min(self._settings.hold_seconds, max(self._settings.min_defer_seconds, wait))

    # -- operators and shutdown --------------------------------------------------------------

    def drain(self) -> list[Claimed]:
        """Take every waiting event out (at shutdown, to hand back); stop the timers."""
        self._closed = True
        held: list[Claimed] = []
        for dest in self._destinations.values():
            if dest.timer is not None:
                dest.timer.cancel()
                dest.timer = None
            held.extend(dest.waiting)
            dest.waiting.clear()
        self._waiting = 0
        return held

    def snapshot(
        self, *, active_only: bool = False, top: int | None = None
    ) -> dict[str, dict[str, object]]:
        """Each destination's limits, breaker state, in-flight and waiting counts.

        ``active_only``: only destinations with something in flight or waiting or a breaker
        that is not closed; ``top``: at most that many, the busiest first.
        """
        now = self._now()
        rows: list[tuple[str, dict[str, object]]] = []
        for key, dest in self._destinations.items():
            breaker = dest.breaker
            active = dest.in_flight or dest.waiting or breaker.state is not BreakerState.CLOSED
            if active_only and not active:
                continue
            reopens = breaker.reopens_at() - now if breaker.state is BreakerState.OPEN else None
            rows.append(
                (
                    key,
                    {
                        "breaker": breaker.state.value,
                        "consecutive_failures": breaker.failures,
                        "trips": breaker.trips,
                        "in_flight": dest.in_flight,
                        "waiting": len(dest.waiting),
                        "concurrency": dest.limits.concurrency,
                        "rate": dest.limits.rate,
                        "probe_in_seconds": None if reopens is None else max(0.0, reopens),
                    },
                )
            )
        rows.sort(key=lambda row: -_load(row[1]))
        if top is not None:
            rows = rows[:top]
        return dict(sorted(rows))

    def reset_breaker(self, key: str) -> bool:
        """Close a destination's breaker; what it held back may be claimed again at once."""
        dest = self._destinations.get(key)
        if dest is None:
            return False
        before = dest.breaker.state
        dest.breaker.reset()
        dest.probe_id = None
        self._breaker_changed(key, dest, before)
        self._pump(key, dest)
        if dest.excluded:
            dest.excluded = False
            self._on_room()
        return True


def _rule(limits: DestinationLimits) -> DestinationRule:
    burst = max(1, limits.burst or math.ceil(limits.rate)) if limits.rate > 0 else 1
    return DestinationRule(limits.concurrency, limits.rate, burst)


def _load(info: dict[str, object]) -> int:
    return int(str(info["in_flight"])) + int(str(info["waiting"]))
