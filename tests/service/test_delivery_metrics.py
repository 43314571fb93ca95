"""What each delivery attempt records: its duration, a delivery's lateness, the outcome
counters under the event's delivery type, and the call to the delivery observer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.service.conftest import World, answering
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.status import EventStatus

pytestmark = pytest.mark.looptime

HTTP = {"delivery_type": "http"}


def sample(world: World, name: str, labels: dict[str, str] | None = None) -> float | None:
    return world.metrics.registry.get_sample_value(name, HTTP if labels is None else labels)


async def test_a_late_delivery_records_its_lateness_and_duration_under_its_type(
    world: World,
) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=2.0))
    # Due 30 s ago (a backlog): delivered at once, answered 2 s later.
    (event,) = await world.submit(world.event(after=-30.0, destination=url))
    await world.run(10.0, world.dispatcher())
    assert (await world.stored(event)).status is EventStatus.COMPLETED
    assert sample(world, "timefuse_events_delivered_total") == 1
    assert sample(world, "timefuse_delivery_duration_seconds_count") == 1
    assert sample(world, "timefuse_delivery_duration_seconds_sum") == pytest.approx(2.0, abs=0.01)
    assert sample(world, "timefuse_delivery_lateness_seconds_count") == 1
    # Lateness is the time it was delivered minus the time it was due.
    assert sample(world, "timefuse_delivery_lateness_seconds_sum") == pytest.approx(32.0, abs=0.05)
    # Nothing is counted under any other delivery type.
    other = {"delivery_type": "None"}
    assert sample(world, "timefuse_delivery_lateness_seconds_count", other) is None
    assert sample(world, "timefuse_delivery_duration_seconds_count", other) is None
    assert sample(world, "timefuse_events_delivered_total", other) is None


async def test_a_delivery_on_time_is_late_only_by_the_attempts_own_time(world: World) -> None:
    (event,) = await world.submit(world.event(after=10.0))
    await world.run(20.0, world.dispatcher())
    assert (await world.stored(event)).status is EventStatus.COMPLETED
    assert sample(world, "timefuse_delivery_lateness_seconds_count") == 1
    lateness = sample(world, "timefuse_delivery_lateness_seconds_sum")
    assert lateness is not None
    assert 0.0 < lateness < 0.05  # the receiver's 1 ms answer, not a rounded-up second
    # Counted in the lowest buckets: the 1 ms answer is under 2.5 ms.
    bucket = {**HTTP, "le": "0.0025"}
    assert sample(world, "timefuse_delivery_lateness_seconds_bucket", bucket) == 1


async def test_a_permanent_failure_counts_under_its_type_and_records_no_lateness(
    world: World,
) -> None:
    url = "https://strict.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.permanent("HTTP 400", 400), after=0.5))
    (event,) = await world.submit(world.event(destination=url, max_retries=5))
    await world.run(10.0, world.dispatcher())
    assert (await world.stored(event)).status is EventStatus.FAILED
    assert sample(world, "timefuse_events_permanently_failed_total") == 1
    assert (
        sample(world, "timefuse_events_permanently_failed_total", {"delivery_type": "None"}) is None
    )
    assert sample(world, "timefuse_events_delivered_total") == 0
    assert sample(world, "timefuse_events_retried_total") == 0
    assert sample(world, "timefuse_events_dead_lettered_total") == 0
    assert sample(world, "timefuse_delivery_duration_seconds_count") == 1
    assert sample(world, "timefuse_delivery_duration_seconds_sum") == pytest.approx(0.5, abs=0.01)
    assert sample(world, "timefuse_delivery_lateness_seconds_count") == 0


@dataclass(frozen=True)
class Seen:
    event_id: str
    attempt: int
    outcome: OutcomeKind
    status_code: int | None
    worker: str


async def test_the_observer_sees_every_attempt_with_its_number_outcome_and_worker(
    world: World,
) -> None:
    url = "https://flaky.example/hook"
    answers = iter([DeliveryOutcome.retriable("HTTP 503", 503), DeliveryOutcome.success(201)])

    async def answer(event: Event, attempt: int) -> DeliveryOutcome:
        return next(answers)

    world.receivers.answer(url, answer)
    seen: list[Seen] = []

    def observer(event: Event, attempt: int, outcome: DeliveryOutcome, worker: str) -> None:
        seen.append(Seen(event.id, attempt, outcome.kind, outcome.status_code, worker))

    (event,) = await world.submit(world.event(destination=url, max_retries=3))
    await world.run(30.0, world.dispatcher("worker-7", observer=observer))
    assert (await world.stored(event)).status is EventStatus.COMPLETED
    assert seen == [
        Seen(event.id, 1, OutcomeKind.RETRIABLE, 503, "worker-7"),
        Seen(event.id, 2, OutcomeKind.SUCCESS, 201, "worker-7"),
    ]


async def test_an_observer_that_raises_does_not_stop_deliveries(world: World) -> None:
    calls: list[str] = []

    def observer(event: Event, attempt: int, outcome: DeliveryOutcome, worker: str) -> None:
        calls.append(event.id)
        raise RuntimeError("observer bug")

    first, second = await world.submit(world.event(after=1.0), world.event(after=2.0))
    await world.run(10.0, world.dispatcher(observer=observer))
    assert calls == [first.id, second.id]
    assert await world.statuses() == {"COMPLETED": 2}
    assert sample(world, "timefuse_events_delivered_total") == 2
