"""Per-destination limits: a concurrency cap, a token bucket and circuit breakers per receiver.

A herd due at midnight must not flatten one receiver, and a slow receiver must not starve the
rest. The gate owns, per destination, what is in flight, a short queue of claimed events
waiting for a slot or a token, and the timer that starts or hands them back:

* Before a claim, :meth:`DestinationGate.claim_budget` says how many events of each known
  destination it may start within ``hold_seconds``; a destination that can start none (an open
  breaker, a full queue) is left out of the claim altogether, so its backlog never crowds out
  the others' events and is never claimed only to be handed back. A source held by a breaker
  of its own at a destination is left out the same way (see
  :mod:`timefuse.service.destination_state` for the breaker rule across sources).
* A claimed event starts at once, or waits in its destination's queue. No event waits longer
  than ``hold_seconds`` from its claim: one that would is handed back uncounted, well inside
  its lease, and no token is spent on it.
* What the gate keeps is bounded: a destination with nothing in flight, waiting or held is
  idle, and is forgotten ``idle_seconds`` later, or sooner once more than ``idle_max``
  destinations are idle (the longest idle first). Per-claim and per-scrape work covers only
  the busy, the held and the just-idle destinations.

Times are seconds on the monotonic clock the gate is given; timers are set relative to it.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from timefuse.domain.breaker import Admission, BreakerState, CircuitBreaker
from timefuse.domain.destination import destination_limit_keys
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.ratelimit import TokenBucket
from timefuse.ports.store import ClaimRef, DestinationRule, SharedBreaker, SharedLimits
from timefuse.service.destination_state import (
    Change,
    DestinationState,
    SourceBreaker,
    source_breaker_key,
    split_breaker_key,
)

__all__ = [
    "ClaimBudget",
    "Claimed",
    "DestinationGate",
    "DestinationLimits",
    "GateSettings",
    "HandBackReason",
    "source_breaker_key",
]


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
    # Distinct sources whose failures (in one run, with no success between) open a
    # destination's breaker for every source; fewer open only their own breakers.
    breaker_sources: int = 2
    # The longest a claimed event waits for its destination before it is handed back.
    hold_seconds: float = 5.0
    # Handed-back events come back after at least this long.
    min_defer_seconds: float = 0.05
    # A destination with nothing in flight, waiting or held for this long is forgotten.
    idle_seconds: float = 300.0
    # At most this many idle destinations are remembered; past it the longest idle goes.
    idle_max: int = 10_000
    # The store enforces caps, rates and breakers for every process together (claims ask for
    # no more than they may start), so the gate starts what it is given and keeps no limit of
    # its own; it still judges receivers and publishes its breakers' changes.
    shared: bool = False


class ClaimBudget:
    """What the next claim may take: destinations (and sources at destinations, by
    :func:`source_breaker_key`) to leave, a budget for the others."""

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

# A claim lists at most this many destinations that went idle within the hold time (the
# latest): the others get the budget of a destination with nothing known of it.
RECENTLY_IDLE_LISTED = 1000


class DestinationGate:
    """Starts claimed events within their destinations' limits, or hands them back.

    :param start: launches an attempt (the gate has counted it in flight).
    :param hand_back: returns a claimed event to the store, due after the delay given.
    :param on_room: called when a destination left out of claims can take events again.
    :param on_breaker: called with a breaker's key (a destination's, or a source's at a
        destination: :func:`source_breaker_key`) and ``True`` when it opens here, ``False``
        when it closes here (to share it with the other processes).
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
        self._destinations: dict[str, DestinationState] = {}
        # Every known destination is busy (in flight or waiting) or idle, never both; the
        # idle ones in the order they went idle, with when. Tripped: any breaker not closed.
        self._busy: set[str] = set()
        self._idle: OrderedDict[str, float] = OrderedDict()
        self._tripped: set[str] = set()
        # Breaker keys open in the store at the last sync (shared limits), and those of them
        # left out of claims while cooling down or probed by another process, until when.
        self._shared_keys: frozenset[str] = frozenset()
        self._shared_open: dict[str, float] = {}
        self._waiting = 0
        self._in_flight = 0
        self._closed = False

    @property
    def occupied(self) -> int:
        """Events in flight or waiting, all destinations together."""
        return self._in_flight + self._waiting

    @property
    def tracked(self) -> int:
        """Destinations this gate remembers now."""
        return len(self._destinations)

    def limits_for(self, event: Event) -> DestinationLimits:
        """The limits an operator set for the event's receiver (its ``host:port``, else its
        host), else its delivery type's, else the default."""
        settings = self._settings
        if not settings.overrides:  # no need to parse the destination again
            return settings.type_defaults.get(event.delivery_type, settings.default)
        for key in destination_limit_keys(event.delivery_type, event.destination):
            found = settings.overrides.get(key)
            if found is not None:
                return found
        return settings.type_defaults.get(event.delivery_type, settings.default)

    def _get(self, claimed: Claimed) -> DestinationState:
        key = claimed.key
        found = self._destinations.get(key)
        if found is None:
            found = self._destinations[key] = self._new(key, self.limits_for(claimed.event))
        return found

    def _new(self, key: str, limits: DestinationLimits) -> DestinationState:
        settings = self._settings
        bucket = None
        if limits.rate > 0 and not settings.shared:
            bucket = TokenBucket(limits.rate, max(1, limits.burst or math.ceil(limits.rate)))
            bucket.updated = self._now()
        breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_seconds)
        return DestinationState(key, limits, breaker, bucket)

    # -- what is kept ------------------------------------------------------------------------

    def _settle(self, key: str, dest: DestinationState) -> None:
        """File the destination as busy or idle, tripped or not, after any change to it."""
        if self._destinations.get(key) is not dest:
            return  # forgotten meanwhile
        if dest.busy:
            self._busy.add(key)
            self._idle.pop(key, None)
        else:
            self._busy.discard(key)
            self._idle.pop(key, None)
            self._idle[key] = self._now()
        if dest.tripped:
            self._tripped.add(key)
        else:
            self._tripped.discard(key)
        if len(self._idle) > self._settings.idle_max:
            self._forget_idle(self._now())

    def _forget_idle(self, now: float) -> None:
        """Forget the idle destinations whose time is up, and any past ``idle_max``."""
        settings = self._settings
        idle = self._idle
        while idle:
            key, since = next(iter(idle.items()))
            dest = self._destinations[key]
            if len(idle) <= settings.idle_max and (
                now - since <= settings.idle_seconds
                or not dest.forgettable(now, settings.idle_seconds)
            ):
                break
            del idle[key]
            del self._destinations[key]
            self._tripped.discard(key)
            if dest.timer is not None:
                dest.timer.cancel()

    def _recently_idle(self, now: float) -> Iterable[str]:
        # Just drained: they keep the budget their known pace gives, for a hold time (the
        # latest few: a claim costs the same however many hosts a tenant sprays).
        for count, (key, since) in enumerate(reversed(self._idle.items())):
            if count >= RECENTLY_IDLE_LISTED or now - since > self._settings.hold_seconds:
                break
            yield key

    # -- claims ------------------------------------------------------------------------------

    def claim_budget(self) -> ClaimBudget:
        """Per destination, how many more events a claim may take now."""
        now = self._now()
        self._forget_idle(now)
        if self._settings.shared:
            return self._shared_budget(now)
        excluded: set[str] = set()
        budgets: dict[str, int] = {}
        for key in {*self._busy, *self._tripped, *self._recently_idle(now)}:
            dest = self._destinations[key]
            budget = self._budget(dest, now)
            dest.excluded = budget <= 0
            if dest.excluded:
                excluded.add(key)
            else:
                budgets[key] = budget
                excluded.update(self._held_pairs(dest, now))
        for key, limits in self._settings.overrides.items():
            if key not in self._destinations:
                budgets[key] = self._fresh_budget(limits)
        return ClaimBudget(frozenset(excluded), budgets, self._fresh_budget(self._settings.default))

    def _shared_budget(self, now: float) -> ClaimBudget:
        excluded = {key for key, until in self._shared_open.items() if now < until}
        for key in self._tripped:
            dest = self._destinations[key]
            breaker = dest.breaker
            if breaker.state is BreakerState.OPEN and now < breaker.reopens_at():
                excluded.add(key)
            excluded.update(self._held_pairs(dest, now))
        return ClaimBudget(frozenset(excluded), {}, None)

    def _held_pairs(self, dest: DestinationState, now: float) -> list[str]:
        """The sources held at ``dest`` by their own breakers, as exclusion keys."""
        held = []
        for source, hold in (dest.sources or {}).items():
            breaker = hold.breaker
            cooling = breaker.state is BreakerState.OPEN and now < breaker.reopens_at()
            probing = breaker.state is not BreakerState.CLOSED and hold.probe_id is not None
            if cooling or probing:
                held.append(source_breaker_key(dest.key, source))
        return held

    def shared_limits(self) -> SharedLimits:
        """The limits the store enforces for every process, and what this one holds."""
        settings = self._settings
        mine = {}
        for key in self._busy:
            dest = self._destinations[key]
            mine[key] = dest.in_flight + dest.waiting_count
        return SharedLimits(
            default=_rule(settings.default),
            overrides={key: _rule(limits) for key, limits in settings.overrides.items()},
            type_defaults={name: _rule(limits) for name, limits in settings.type_defaults.items()},
            mine=mine,
            breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
        )

    def sync_breakers(self, shared: Sequence[SharedBreaker]) -> None:
        """Follow the shared breakers: open here what another process opened (for as long as
        it has been open), close here what is closed for everyone."""
        now = self._now()
        cooldown = self._settings.breaker_cooldown_seconds
        self._shared_keys = frozenset(b.key for b in shared)
        # Left out of claims while cooling down or while another process probes it.
        self._shared_open = {}
        for b in shared:
            until = now + 1.0 if b.probe_by else now - b.open_seconds + cooldown
            if until > now:
                self._shared_open[b.key] = until
            self._open_shared(b.key, b.open_seconds, now)
        for key in list(self._tripped):
            self._close_unshared(key, now)

    def _open_shared(self, key: str, open_seconds: float, now: float) -> None:
        dest_key, source = split_breaker_key(key)
        dest = self._destinations.get(dest_key)
        if dest is None:
            return
        if source is None:
            breaker = dest.breaker
        else:
            hold = dest.hold_of(source) or dest.new_hold(source)
            breaker = hold.breaker
        if breaker.state is BreakerState.CLOSED:
            breaker.state = BreakerState.OPEN
            breaker.opened_at = now - open_seconds
            self._pump(dest_key, dest)
            self._settle(dest_key, dest)

    def _close_unshared(self, key: str, now: float) -> None:
        dest = self._destinations.get(key)
        if dest is None:
            return
        shared = self._shared_keys
        breaker = dest.breaker
        if (
            breaker.state is not BreakerState.CLOSED
            and key not in shared
            and dest.probe_id is None
            and now - dest.opened_here > PUBLISH_GRACE_SECONDS
        ):
            breaker.reset()
            dest.run_sources = None
        for source, hold in list((dest.sources or {}).items()):
            if (
                hold.breaker.state is not BreakerState.CLOSED
                and source_breaker_key(key, source) not in shared
                and hold.probe_id is None
                and now - hold.opened_here > PUBLISH_GRACE_SECONDS
            ):
                dest.drop_hold(source)
        self._pump(key, dest)
        self._settle(key, dest)

    def _fresh_budget(self, limits: DestinationLimits) -> int:
        """What a claim may take for a destination with nothing known of it yet: one round."""
        startable = limits.concurrency or 0
        if limits.rate > 0:
            rate_bound = max(1, limits.burst or math.ceil(limits.rate))
            startable = min(startable, rate_bound) if startable else rate_bound
        if limits.queue:
            startable = min(startable, limits.queue) if startable else limits.queue
        return max(1, startable) if startable else 1_000_000

    def _budget(self, dest: DestinationState, now: float) -> int:
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
        budget = startable - dest.waiting_count
        return 1_000_000 if budget == math.inf else max(0, math.floor(budget))

    def _pace(self, dest: DestinationState) -> float:
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

    # -- admission ---------------------------------------------------------------------------

    def admit(self, claimed: Claimed, *, probe: bool = False) -> None:
        """Start a claimed event now, queue it for its destination, or hand it back.

        ``probe``: the store gave this event as the one probe of a breaker it shares (shared
        limits).
        """
        dest = self._get(claimed)
        if self._settings.shared:
            self._admit_shared(dest, claimed, probe)
        else:
            self._admit(dest, claimed)
        self._settle(claimed.key, dest)

    def _admit(self, dest: DestinationState, claimed: Claimed) -> None:
        now = self._now()
        event_id = claimed.event.id
        hold = dest.hold_of(claimed.event.source)
        held = hold is not None and hold.breaker.state is not BreakerState.CLOSED
        if dest.breaker.state is not BreakerState.CLOSED:
            admission = dest.breaker.admit(now)
            if admission is Admission.REJECT:
                self._hand_back(claimed, self._breaker_delay(dest, now), HandBackReason.BREAKER)
                return
            # This event probes the receiver for everyone (and for its source, if held too).
            if held:
                assert hold is not None
                if hold.breaker.admit(now) is Admission.REJECT:
                    dest.breaker.probing = False
                    self._hand_back(claimed, self._hold_delay(hold, now), HandBackReason.BREAKER)
                    return
                hold.probe_id = event_id
            dest.probe_id = event_id
            self._launch(dest, claimed)
            return
        if held:
            assert hold is not None
            if hold.breaker.admit(now) is Admission.REJECT:
                self._hand_back(claimed, self._hold_delay(hold, now), HandBackReason.BREAKER)
                return
            hold.probe_id = event_id  # probes for its source, within the destination's limits
        if not dest.waiting and self._can_start(dest, now):
            self._launch(dest, claimed)
            return
        if dest.waiting is None:
            dest.waiting = deque()
        dest.waiting.append(claimed)
        self._waiting += 1
        self._pump(claimed.key, dest)

    def _admit_shared(self, dest: DestinationState, claimed: Claimed, probe: bool) -> None:
        # The store let this event through its shared limits and breakers: start it. A
        # breaker open here but closed for everyone (a probe elsewhere succeeded) closes here.
        source = claimed.event.source
        pair = source_breaker_key(dest.key, source)
        hold = dest.hold_of(source)
        breaker = dest.breaker
        if probe:
            for_all = breaker.state is not BreakerState.CLOSED or dest.key in self._shared_keys
            for_source = (
                hold is not None and hold.breaker.state is not BreakerState.CLOSED
            ) or pair in self._shared_keys
            if for_all:
                _probing(breaker)
                dest.probe_id = claimed.event.id
            if for_source or not for_all:
                hold = hold or dest.new_hold(source)
                _probing(hold.breaker)
                hold.probe_id = claimed.event.id
        else:
            if breaker.state is not BreakerState.CLOSED and dest.probe_id is None:
                breaker.reset()
                dest.run_sources = None
            if (
                hold is not None
                and hold.breaker.state is not BreakerState.CLOSED
                and hold.probe_id is None
            ):
                dest.drop_hold(source)
        self._launch(dest, claimed)

    def finished(self, claimed: Claimed, outcome: DeliveryOutcome, seconds: float) -> None:
        """An attempt admitted by the gate ended: free its slot, judge the receiver."""
        dest = self._destinations.get(claimed.key)
        self._in_flight -= 1
        if dest is None:
            return
        event = claimed.event
        dest.in_flight -= 1
        dest.fly(event.source, -1)
        typical = dest.typical_seconds
        dest.typical_seconds = seconds if typical is None else typical + 0.1 * (seconds - typical)
        probed = dest.probe_id == event.id
        if probed:
            dest.probe_id = None
        hold = dest.hold_of(event.source)
        source_probed = hold is not None and hold.probe_id == event.id
        if hold is not None and source_probed:
            hold.probe_id = None
        changes = dest.judge(
            event.source,
            succeeded=outcome.kind is OutcomeKind.SUCCESS,
            retriable=outcome.kind is OutcomeKind.RETRIABLE,
            now=self._now(),
            sources_needed=self._settings.breaker_sources,
            probed=probed,
            source_probed=source_probed,
        )
        self._publish(changes)
        self._pump(claimed.key, dest)
        self._settle(claimed.key, dest)

    def _publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self._on_breaker(change.key, change.opened)

    def abandoned(self, claimed: Claimed) -> None:
        """An attempt the gate started never ran (its type vanished, a shutdown): free the
        slot, judge nothing, and let another event probe if this one was the probe."""
        dest = self._destinations.get(claimed.key)
        self._in_flight -= 1
        if dest is None:
            return
        dest.in_flight -= 1
        dest.fly(claimed.event.source, -1)
        self._unprobe(dest, claimed)
        self._pump(claimed.key, dest)
        self._settle(claimed.key, dest)

    def _unprobe(self, dest: DestinationState, claimed: Claimed) -> None:
        """``claimed`` won't probe after all: let another event do it."""
        event_id = claimed.event.id
        if dest.probe_id == event_id:
            dest.probe_id = None
            dest.breaker.probing = False
        hold = dest.hold_of(claimed.event.source)
        if hold is not None and hold.probe_id == event_id:
            hold.probe_id = None
            hold.breaker.probing = False

    def _launch(self, dest: DestinationState, claimed: Claimed) -> None:
        dest.in_flight += 1
        dest.fly(claimed.event.source, 1)
        self._in_flight += 1
        self._start(claimed)

    def _can_start(self, dest: DestinationState, now: float) -> bool:
        if self._settings.shared:
            return True
        cap = dest.limits.concurrency
        if cap and dest.in_flight >= cap:
            return False
        return dest.bucket is None or dest.bucket.try_take(now)

    def _pump(self, key: str, dest: DestinationState) -> None:
        """Start what ``dest`` can take now, hand back what waited too long or is held, set
        its timer."""
        if dest.timer is not None:
            dest.timer.cancel()
            dest.timer = None
        waiting = dest.waiting
        now = self._now()
        hold_seconds = self._settings.hold_seconds
        while waiting:
            head = waiting[0]
            if dest.breaker.state is not BreakerState.CLOSED:
                self._release_waiting(dest, self._breaker_delay(dest, now))
                break
            hold = dest.hold_of(head.event.source)
            if (
                hold is not None
                and hold.breaker.state is not BreakerState.CLOSED
                and hold.probe_id != head.event.id
            ):
                self._take_head(dest)
                self._hand_back(head, self._hold_delay(hold, now), HandBackReason.BREAKER)
                continue
            if now >= head.claimed_at + hold_seconds:
                self._take_head(dest)
                self._unprobe(dest, head)
                self._hand_back(head, self._wait_delay(dest), HandBackReason.WAIT)
                continue
            if not self._can_start(dest, now):
                break
            self._take_head(dest)
            self._launch(dest, head)
        if waiting and not self._closed:
            deadline = waiting[0].claimed_at + hold_seconds - now
            cap = dest.limits.concurrency
            # A full destination starts its next event when a slot frees (finished pumps), not
            # when a token comes: a token there now would re-arm the timer at 0 s, a busy loop.
            full = bool(cap) and dest.in_flight >= cap
            token = math.inf
            if dest.bucket is not None and not full:
                token = dest.bucket.wait_seconds(now)
            delay = max(0.0, min(deadline, token))
            dest.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, key, dest)
        elif not waiting:
            dest.waiting = None
        if dest.excluded and self._budget(dest, now) >= self._room_threshold(dest):
            dest.excluded = False
            self._on_room()

    def _on_timer(self, key: str, dest: DestinationState) -> None:
        dest.timer = None
        self._pump(key, dest)
        self._settle(key, dest)

    def _take_head(self, dest: DestinationState) -> Claimed:
        assert dest.waiting
        self._waiting -= 1
        return dest.waiting.popleft()

    def _room_threshold(self, dest: DestinationState) -> float:
        # A destination left out of claims comes back once it can take a worthwhile batch,
        # not at every freed slot (a claim per completion would churn the store).
        return max(1.0, min(100.0, self._pace(dest) * self._settings.hold_seconds * 0.4))

    def _release_waiting(self, dest: DestinationState, delay: float) -> None:
        while dest.waiting:
            claimed = self._take_head(dest)
            self._unprobe(dest, claimed)
            self._hand_back(claimed, delay, HandBackReason.BREAKER)

    def _breaker_delay(self, dest: DestinationState, now: float) -> float:
        # Held back due at once, not at the breaker's probe time: claims leave the destination
        # out while its breaker is open, so these wait in the store with its other events, and
        # a reset (or a successful probe) lets every one of them be claimed at once.
        return self._settings.min_defer_seconds

    def _hold_delay(self, hold: SourceBreaker, now: float) -> float:
        # Short: a store that can't leave one source's events out of its claims gives them
        # again after this, and a reset or a successful probe must not leave them parked
        # for a whole cool-down.
        settings = self._settings
        until = hold.breaker.reopens_at() - now
        if hold.breaker.state is not BreakerState.OPEN or until <= 0:
            until = settings.hold_seconds
        return max(settings.min_defer_seconds, min(until, settings.hold_seconds))

    def _wait_delay(self, dest: DestinationState) -> float:
        """About how long the destination's queue takes to drain at its pace."""
        pace = self._pace(dest)
        wait = dest.waiting_count / pace if pace != math.inf else 0.0
        return min(self._settings.hold_seconds, max(self._settings.min_defer_seconds, wait))

    # -- operators and shutdown --------------------------------------------------------------

    def drain(self) -> list[Claimed]:
        """Take every waiting event out (at shutdown, to hand back); stop the timers."""
        self._closed = True
        held: list[Claimed] = []
        for key in list(self._busy):
            dest = self._destinations[key]
            if dest.timer is not None:
                dest.timer.cancel()
                dest.timer = None
            held.extend(dest.waiting or ())
            dest.waiting = None
            self._settle(key, dest)
        self._waiting = 0
        return held

    def snapshot(
        self,
        *,
        active_only: bool = False,
        top: int | None = None,
        sources: frozenset[str] | None = None,
    ) -> dict[str, dict[str, object]]:
        """Each destination's limits, breakers, in-flight and waiting counts.

        ``active_only``: only destinations with something in flight or waiting or a breaker
        that is not closed; ``top``: at most that many, the busiest first; ``sources``: only
        destinations where one of these sources has an event in flight or waiting, or a
        breaker of its own (``None``: every destination).
        """
        now = self._now()
        keys: Iterable[str] = (
            {*self._busy, *self._tripped} if active_only else list(self._destinations)
        )
        rows: list[tuple[str, dict[str, object]]] = []
        for key in keys:
            dest = self._destinations[key]
            if sources is not None and sources.isdisjoint(dest.present_sources()):
                continue
            rows.append((key, dest.row(now)))
        if top is not None:
            rows.sort(key=lambda row: -_load(row[1]))
            rows = rows[:top]
        return dict(sorted(rows))

    def reset_breaker(self, key: str) -> bool:
        """Close a destination's breakers, its own and its sources'; what they held back may
        be claimed again at once."""
        dest = self._destinations.get(key)
        if dest is None:
            return False
        closed = {change.key for change in dest.reset()}
        # Shared rows of sources this process hasn't met there are closed too.
        closed.update(k for k in self._shared_keys if split_breaker_key(k)[0] == key)
        for breaker_key in sorted(closed):
            self._shared_open.pop(breaker_key, None)
            self._on_breaker(breaker_key, False)
        dest.excluded = False
        self._pump(key, dest)
        self._settle(key, dest)
        self._on_room()
        return True


def _probing(breaker: CircuitBreaker) -> None:
    breaker.state = BreakerState.HALF_OPEN
    breaker.probing = True


def _rule(limits: DestinationLimits) -> DestinationRule:
    burst = max(1, limits.burst or math.ceil(limits.rate)) if limits.rate > 0 else 1
    return DestinationRule(limits.concurrency, limits.rate, burst)


def _load(info: dict[str, object]) -> int:
    return int(str(info["in_flight"])) + int(str(info["waiting"]))
