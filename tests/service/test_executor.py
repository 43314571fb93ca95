"""One delivery attempt (timefuse/service/executor.py): the delivery type's answer, or a
RETRIABLE outcome saying why there is none (a timeout, an exception, an answer that is not an
outcome), with when the attempt started and how long it took, on the fake loop clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.service.conftest import START, LoopClock, loop_time, registry_of
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.ports.delivery import AttemptTimeout, Deliver, DeliveryType
from timefuse.service.executor import AttemptExecutor, UnknownDeliveryType
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.looptime


def _executor(
    deliver: Deliver, *, timeout: float = 35.0, attempt_timeout: AttemptTimeout | None = None
) -> AttemptExecutor:
    pigeon = DeliveryType(
        name="pigeon",
        validate_destination=lambda destination: None,
        deliver=deliver,
        timeout_seconds=timeout,
        attempt_timeout=attempt_timeout,
    )
    return AttemptExecutor(registry_of(pigeon), clock=LoopClock(), monotonic=loop_time)


def _event(**overrides: object) -> Event:
    return make_event(delivery_type="pigeon", destination="coop", **overrides)


async def test_an_answer_is_reported_with_its_start_and_duration() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(2.5)
        return DeliveryOutcome.success(204)

    start = loop_time()
    attempted = await _executor(deliver).run(_event())
    assert attempted.outcome == DeliveryOutcome.success(204)
    assert attempted.started_at == START + timedelta(seconds=start)
    assert attempted.seconds == pytest.approx(2.5)


async def test_an_event_of_a_type_not_loaded_is_refused_naming_the_type() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        raise AssertionError("not to be called")

    with pytest.raises(UnknownDeliveryType) as refused:
        await _executor(deliver).run(make_event(delivery_type="carrier", destination="coop"))
    assert refused.value.args == ("carrier",)


async def test_an_attempt_past_the_types_timeout_is_cut_off_as_retriable() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(100.0)
        return DeliveryOutcome.success(200)

    attempted = await _executor(deliver, timeout=2.5).run(_event())
    assert attempted.outcome == DeliveryOutcome.retriable(
        "delivery type 'pigeon' timed out after 2.5 s"
    )
    assert attempted.seconds == pytest.approx(2.5)


async def test_an_events_own_timeout_is_the_one_that_cuts_it_off() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(100.0)
        return DeliveryOutcome.success(200)

    def per_event(event: Event) -> float:
        return 4.0 if event.source == "patient" else 1.0

    executor = _executor(deliver, timeout=60.0, attempt_timeout=per_event)
    patient = await executor.run(_event(source="patient"))
    assert patient.outcome.error == "delivery type 'pigeon' timed out after 4 s"
    assert patient.seconds == pytest.approx(4.0)
    hasty = await executor.run(_event(source="hasty"))
    assert hasty.outcome.error == "delivery type 'pigeon' timed out after 1 s"
    assert hasty.seconds == pytest.approx(1.0)


async def test_a_delivery_that_raises_is_retriable_with_the_exception_as_its_reason() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(0.5)
        raise ConnectionResetError("peer went away")

    attempted = await _executor(deliver).run(_event())
    assert attempted.outcome == DeliveryOutcome.retriable("ConnectionResetError: peer went away")
    assert attempted.seconds == pytest.approx(0.5)


async def test_an_answer_that_is_not_an_outcome_is_retriable_saying_what_came_back() -> None:
    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        return 200  # type: ignore[return-value]  # a plugin's bug

    attempted = await _executor(deliver).run(_event())
    assert attempted.outcome.kind is OutcomeKind.RETRIABLE
    assert attempted.outcome == DeliveryOutcome.retriable(
        "delivery type 'pigeon' returned int, not an outcome"
    )
