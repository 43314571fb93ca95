"""The service tier: dispatcher, gate, writer and maintenance on the in-memory store.

Every test runs on a fake, fast-forwarding event loop clock (``looptime``): a minute of
deliveries takes milliseconds, and nothing sleeps for real. Receivers are a delivery type that
answers as each test says and records every request it gets.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.domain.retry import RetryPolicy
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.delivery import DeliveryType
from timefuse.service.dispatcher import Dispatcher, DispatcherSettings, Observer
from timefuse.service.events import EventService
from timefuse.service.gate import DestinationLimits, GateSettings
from timefuse.service.maintenance import Maintenance, MaintenanceSettings
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal
from timefuse.testing.factories import make_event

START = datetime(2030, 1, 1, tzinfo=UTC)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


class LoopClock:
    """Wall time on the event loop's clock (fake under looptime), plus an optional skew."""

    def __init__(self, skew_seconds: float = 0.0) -> None:
        self.skew = timedelta(seconds=skew_seconds)

    def now(self) -> datetime:
        return START + timedelta(seconds=loop_time()) + self.skew


class LongestWaits(random.Random):
    """Jitter that always draws the top of its range: each backoff waits its full ceiling,
    so a test can tell which ceiling the dispatcher used."""

    def uniform(self, a: float, b: float) -> float:
        return b


Answer = Callable[[Event, int], Awaitable[DeliveryOutcome]]


OK = DeliveryOutcome.success(200)


def answering(outcome: DeliveryOutcome = OK, after: float = 0.001) -> Answer:
    async def answer(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(after)
        return outcome

    return answer


@dataclass(frozen=True)
class Request:
    event_id: str
    destination: str
    attempt: int
    at: float  # loop time when it arrived


@dataclass
class Receivers:
    """Receivers by destination URL: each answers as set (default: 200 after 1 ms)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)

    def answer(self, destination: str, answer: Answer) -> None:
        self.answers[destination] = answer

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        where = event.destination
        self.requests.append(Request(event.id, where, attempt, loop_time()))
        self.in_flight[where] += 1
        self.most_in_flight[where] = max(self.most_in_flight[where], self.in_flight[where])
        try:
            return await self.answers.get(where, answering())(event, attempt)
        finally:
            self.in_flight[where] -= 1

    def delivery_type(self, name: str = "http", timeout: float = 35.0) -> DeliveryType:
        return DeliveryType(
            name=name,
            validate_destination=lambda destination: None,
            deliver=self.deliver,
            timeout_seconds=timeout,
        )

    def received(self, destination: str | None = None) -> Counter[str]:
        """Requests per event id (for one destination)."""
        return Counter(
            r.event_id for r in self.requests if destination is None or r.destination == destination
        )

    def times(self, event_id: str) -> list[float]:
        return [r.at for r in self.requests if r.event_id == event_id]


@dataclass
class World:
    clock: LoopClock
    memory: MemoryStore
    store: Store
    receivers: Receivers
    registry: DeliveryRegistry
    metrics: Metrics = field(default_factory=Metrics)
    wakeup: DueSignal = field(default_factory=DueSignal)

    def dispatcher(
        self,
        worker: str = "worker-1",
        *,
        limits: DestinationLimits | None = None,
        overrides: dict[str, DestinationLimits] | None = None,
        clock: LoopClock | None = None,
        registry: DeliveryRegistry | None = None,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        **settings: Any,
    ) -> Dispatcher:
        dispatch = DispatcherSettings(
            worker_id=worker, **{"retry_policy": RetryPolicy(1.0, 60.0), **settings}
        )
        gate = GateSettings(
            default=limits or DestinationLimits(),
            overrides=overrides or {},
            breaker_failures=breaker_failures,
            breaker_cooldown_seconds=breaker_cooldown,
        )
        clock = clock or self.clock
        return Dispatcher(
            store=self.store,
            registry=registry or self.registry,
            clock=clock,
            metrics=self.metrics,
            settings=dispatch,
            gate_settings=gate,
            wakeup=DueSignal(clock),
            rng=rng or random.Random(7),
            observer=observer,
            monotonic=loop_time,
        )

    def events(self, **options: Any) -> EventService:
        """An events service on the world's store, storing submissions inline; ``options``
        are the service's own (a wake-up, quotas, limits, another registry)."""
        fields: dict[str, Any] = {
            "buffer": InlineIngestBuffer(self.store),
            "store": self.store,
            "registry": self.registry,
            "clock": self.clock,
            "metrics": self.metrics,
        }
        return EventService(**{**fields, **options})

    def maintenance(
        self, holder: str = "maintainer", *, wakeup: DueSignal | None = None, **settings: Any
    ) -> Maintenance:
        return Maintenance(
            store=self.store,
            clock=self.clock,
            metrics=self.metrics,
            settings=MaintenanceSettings(**settings),
            holder=holder,
            wakeup=wakeup,
            monotonic=loop_time,
        )

    def event(self, after: float = 0.0, **overrides: Any) -> Event:
        """A new event due ``after`` seconds from now (fake time)."""
        due = self.clock.now() + timedelta(seconds=after)
        fields: dict[str, Any] = {
            "scheduled_at": due,
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }
        return make_event(**{**fields, **overrides})

    async def submit(self, *events: Event) -> list[Event]:
        assert await self.store.insert_many(events) == {e.id: e.id for e in events}
        for dispatcher_wakeup in self._wakeups:
            dispatcher_wakeup.notify(min(e.next_attempt_at for e in events))
        return list(events)

    _wakeups: list[DueSignal] = field(default_factory=list)

    async def run(
        self,
        seconds: float,
        *dispatchers: Dispatcher,
        maintenance: Maintenance | None = None,
        until: Callable[[], bool] | None = None,
        every: float = 1.0,
    ) -> None:
        """Run the dispatchers (and maintenance) for ``seconds`` of loop time, or until
        ``until()`` holds (asked every ``every`` seconds); then stop them gracefully."""
        stop = asyncio.Event()
        roles: list[Callable[[asyncio.Event], Awaitable[None]]] = [d.run for d in dispatchers]
        if maintenance is not None:
            roles.append(maintenance.run)
        self._wakeups = [d.wakeup for d in dispatchers]
        tasks = [asyncio.create_task(role(stop)) for role in roles]
        deadline = loop_time() + seconds
        while loop_time() < deadline and not (until is not None and until()):
            step = deadline - loop_time() if until is None else every
            # A role that ends before it is told to (its writer died, say) raises here.
            done, _ = await asyncio.wait(tasks, timeout=max(0.0, step))
            for task in done:
                task.result()
                raise AssertionError(f"{task} ended before it was stopped")
        stop.set()
        await asyncio.gather(*tasks)

    async def statuses(self) -> Counter[str]:
        return Counter(event.status.value for event in self.memory.snapshot().values())

    async def stored(self, event: Event) -> Event:
        found = await self.store.get(event.id)
        assert found is not None
        return found


def registry_of(*types: DeliveryType) -> DeliveryRegistry:
    registry = DeliveryRegistry()
    for delivery_type in types:
        registry.register(delivery_type)
    return registry


async def _world(shared_limits: bool) -> World:
    clock = LoopClock()
    memory = MemoryStore(clock=clock, shared_limits=shared_limits)
    receivers = Receivers()
    store = Store(memory)
    await store.open()
    return World(clock, memory, store, receivers, registry_of(receivers.delivery_type()))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """One process's view: a store only it uses (as the embedded SQLite one)."""
    made = await _world(shared_limits=False)
    yield made
    await made.store.close()


@pytest.fixture
async def cluster() -> AsyncIterator[World]:
    """A store several dispatchers share, with limits and breakers kept in the store for all
    of them (as PostgreSQL keeps them for several processes)."""
    made = await _world(shared_limits=True)
    yield made
    await made.store.close()


def by_destination(requests: list[Request]) -> dict[str, list[Request]]:
    grouped: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        grouped[request.destination].append(request)
    return grouped
