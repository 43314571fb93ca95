"""The delivery type contract: a suite every delivery type, built-in or plugin, should pass.

Subclass :class:`DeliveryTypeContract` in a test module, under a name pytest collects
(``Test...``), and provide four fixtures::

    import json
    import pytest
    from timefuse.testing.delivery_contract import DeliveryTypeContract, collect_delivery_types

    import my_package.plugin


    class TestEchoType(DeliveryTypeContract):
        @pytest.fixture
        def delivery_type(self, env):
            return collect_delivery_types(my_package.plugin, env)["echo"]

        @pytest.fixture
        def valid_destination(self):
            return "echo:orders"

        @pytest.fixture
        def invalid_destinations(self):
            return ["", "orders", "http://elsewhere.example/"]

        @pytest.fixture
        def delivered_event_ids(self, capsys):
            async def read():  # the echo type prints "<event id> <attempt> <payload>"
                return [line.split()[0] for line in capsys.readouterr().out.splitlines() if line]

            return read

Optional fixtures: ``env``, the environment variables the plugin's declared settings are read
from (default: none, so every setting has its default), and ``arrange_failure``, which
prepares a destination where delivery fails (a receiver told to answer 503, a destination that
is a directory) and returns it; the failure test is skipped while it returns ``None``. Any
other fixture of the class may be overridden the same way. Every fixture of the kit is defined
on the class; the module itself (and timefuse's pytest plugin) adds none.

The tests are coroutines run by pytest-asyncio (they carry its marker, so its strict mode
works too).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from timefuse.config import DispatchSettings
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.plugins.manager import collect_types, load_only
from timefuse.plugins.registry import DeliveryRegistry, timeout_problem, type_name_problem
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.factories import make_event

__all__ = ["DeliveryTypeContract", "ReadBack", "collect_delivery_types", "make_event"]

ReadBack = Callable[[], Awaitable[Collection[str]]]
"""An async function returning the ids of the events a delivery type has delivered so far."""

# Pretty-printed, non-ASCII, with odd spacing: a type that re-encodes the payload, or that
# writes line-oriented records and forgets payloads may span lines, shows it here.
CONTRACT_PAYLOAD = '{\n  "order": 42,\n  "name": "café ☃",  "tags": ["a","b"]\n}'.encode()

CONCURRENT_DELIVERIES = 20


def collect_delivery_types(
    plugin: object, env: Mapping[str, str] | None = None
) -> dict[str, DeliveryType]:
    """The delivery types ``plugin`` registers, by name, checked as timefuse checks them.

    ``plugin`` is what the entry point names (a module, usually). The plugin goes through the
    same hook validation and registry rules as at start-up, so a hook typo or a bad type name
    fails here; the types come back exactly as the plugin built them (not started).

    :param env: the environment variables the plugin's declared settings are read from
        (default: none, every setting at its default; the process environment is not read).
    :raises timefuse.plugins.registry.PluginError: what would stop timefuse's start-up.
    :raises timefuse.config.ConfigError: a value the plugin's settings refuse.
    """
    delivery_types = collect_types(load_only(plugin, env=dict(env or {})))
    registry = DeliveryRegistry()
    for delivery_type in delivery_types:
        registry.register(delivery_type)
    return {delivery_type.name: delivery_type for delivery_type in delivery_types}


def _failure(outcome: object, expected: str) -> str:
    if not isinstance(outcome, DeliveryOutcome):
        return f"deliver() returned {outcome!r}, not a DeliveryOutcome"
    return f"expected {expected}, got {outcome.kind.value}: {outcome.error}"


def _succeeded(outcome: object) -> bool:
    return isinstance(outcome, DeliveryOutcome) and outcome.succeeded


def _is_failure(outcome: object) -> bool:
    return (
        isinstance(outcome, DeliveryOutcome)
        and outcome.kind in (OutcomeKind.RETRIABLE, OutcomeKind.PERMANENT)
        and bool(outcome.error and outcome.error.strip())
    )


class DeliveryTypeContract:
    """The contract suite; subclass it as ``Test<YourType>`` and provide the fixtures."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.timefuse_contract]

    # -- fixtures the author provides -------------------------------------------------------

    @pytest.fixture
    def delivery_type(self) -> DeliveryType:
        """The type under test, not started (see :func:`collect_delivery_types`)."""
        pytest.fail("DeliveryTypeContract needs a `delivery_type` fixture returning the type")

    @pytest.fixture
    def valid_destination(self) -> str:
        """A destination the type accepts and delivers to successfully."""
        pytest.fail("DeliveryTypeContract needs a `valid_destination` fixture")

    @pytest.fixture
    def invalid_destinations(self) -> list[str]:
        """Destinations the type must refuse, each with a reason."""
        pytest.fail("DeliveryTypeContract needs an `invalid_destinations` fixture (a list)")

    @pytest.fixture
    def delivered_event_ids(self) -> ReadBack:
        """An async function returning the ids of events delivered so far."""
        pytest.fail("DeliveryTypeContract needs a `delivered_event_ids` fixture (async read-back)")

    # -- fixtures the author may override ---------------------------------------------------

    @pytest.fixture
    def env(self) -> dict[str, str]:
        """Environment variables for the plugin's declared settings (default: none)."""
        return {}

    @pytest.fixture
    def arrange_failure(self) -> str | None:
        """A destination where delivery fails (after arranging it), or ``None`` to skip."""
        return None

    @pytest_asyncio.fixture
    async def started_type(self, delivery_type: DeliveryType) -> AsyncIterator[DeliveryType]:
        await _start(delivery_type)
        try:
            yield delivery_type
        finally:
            await _stop(delivery_type)

    def new_event(self, delivery_type: DeliveryType, destination: str, **overrides: Any) -> Event:
        """An event for this type; the suite's tests all build theirs here."""
        fields: dict[str, Any] = {"payload": CONTRACT_PAYLOAD, "attempts": 1}
        fields.update(overrides)
        return make_event(delivery_type=delivery_type.name, destination=destination, **fields)

    # -- destinations ------------------------------------------------------------------------

    def test_accepts_the_valid_destination(
        self, delivery_type: DeliveryType, valid_destination: str
    ) -> None:
        reason = delivery_type.validate_destination(valid_destination)
        assert reason is None, f"{valid_destination!r} was refused: {reason}"

    def test_rejects_each_invalid_destination_with_a_reason(
        self, delivery_type: DeliveryType, invalid_destinations: list[str]
    ) -> None:
        assert invalid_destinations, "invalid_destinations should list at least one destination"
        accepted = {
            destination: reason
            for destination in invalid_destinations
            if not _is_reason(reason := delivery_type.validate_destination(destination))
        }
        assert not accepted, f"accepted, or refused without a reason: {accepted}"

    # -- what the registry requires ----------------------------------------------------------

    def test_name_is_lower_case_and_follows_the_registry_rule(
        self, delivery_type: DeliveryType
    ) -> None:
        assert delivery_type.name == delivery_type.name.lower()
        assert type_name_problem(delivery_type.name) is None
        DeliveryRegistry().register(delivery_type)  # every other registration rule

    def test_timeout_is_positive_finite_and_shorter_than_a_lease(
        self, delivery_type: DeliveryType
    ) -> None:
        assert timeout_problem(delivery_type.timeout_seconds) is None
        # An attempt outliving its lease lets another dispatcher claim and deliver it again.
        lease = DispatchSettings().lease_seconds
        assert delivery_type.timeout_seconds < lease, (
            f"timeout_seconds {delivery_type.timeout_seconds:g} is not below the default "
            f"lease of {lease:g} s"
        )

    # -- delivering --------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_delivers_and_the_delivery_carries_the_event_id(
        self,
        started_type: DeliveryType,
        valid_destination: str,
        delivered_event_ids: ReadBack,
    ) -> None:
        event = self.new_event(started_type, valid_destination)
        outcome = await started_type.deliver(event, 1)
        assert _succeeded(outcome), _failure(outcome, "SUCCESS")
        assert event.id in await delivered_event_ids()

    @pytest.mark.asyncio
    async def test_a_failed_delivery_is_an_outcome_with_a_reason(
        self, started_type: DeliveryType, arrange_failure: str | None
    ) -> None:
        if arrange_failure is None:
            pytest.skip("no arrange_failure fixture: provide one to check failures")
        outcome = await started_type.deliver(self.new_event(started_type, arrange_failure), 1)
        assert _is_failure(outcome), _failure(outcome, "RETRIABLE or PERMANENT with an error")

    @pytest.mark.asyncio
    async def test_an_invalid_destination_at_delivery_is_an_outcome_not_an_exception(
        self, started_type: DeliveryType, invalid_destinations: list[str]
    ) -> None:
        # Destinations are checked at submission, but configuration may have changed since.
        for destination in invalid_destinations:
            outcome = await started_type.deliver(self.new_event(started_type, destination), 1)
            assert _is_failure(outcome), f"{destination!r}: {_failure(outcome, 'a failure')}"

    @pytest.mark.asyncio
    async def test_start_deliver_and_stop_finish_within_its_timeout(
        self,
        delivery_type: DeliveryType,
        valid_destination: str,
        arrange_failure: str | None,
    ) -> None:
        destinations = [valid_destination] + ([arrange_failure] if arrange_failure else [])
        async with asyncio.timeout(delivery_type.timeout_seconds):
            await _start(delivery_type)
            try:
                for destination in destinations:
                    event = self.new_event(delivery_type, destination)
                    outcome = await delivery_type.deliver(event, 1)
                    assert isinstance(outcome, DeliveryOutcome), _failure(outcome, "an outcome")
            finally:
                await _stop(delivery_type)

    @pytest.mark.asyncio
    async def test_start_and_stop_twice_leave_no_task_running(
        self,
        delivery_type: DeliveryType,
        valid_destination: str,
        delivered_event_ids: ReadBack,
    ) -> None:
        before = asyncio.all_tasks()
        events = []
        for _ in range(2):
            await _start(delivery_type)
            events.append(self.new_event(delivery_type, valid_destination))
            outcome = await delivery_type.deliver(events[-1], 1)
            assert _succeeded(outcome), _failure(outcome, "SUCCESS after a restart")
            await _stop(delivery_type)
        await _stop(delivery_type)  # stopping what is stopped is harmless
        await asyncio.sleep(0)  # let tasks cancelled by stop() finish
        left = [task for task in asyncio.all_tasks() - before if not task.done()]
        assert not left, f"tasks still running after stop(): {left}"
        assert {event.id for event in events} <= set(await delivered_event_ids())

    @pytest.mark.asyncio
    async def test_concurrent_deliveries_all_succeed(
        self,
        started_type: DeliveryType,
        valid_destination: str,
        delivered_event_ids: ReadBack,
    ) -> None:
        events = [
            self.new_event(started_type, valid_destination) for _ in range(CONCURRENT_DELIVERIES)
        ]
        outcomes = await asyncio.gather(*(started_type.deliver(event, 1) for event in events))
        failed = [_failure(outcome, "SUCCESS") for outcome in outcomes if not _succeeded(outcome)]
        assert not failed, f"{len(failed)} of {len(events)} failed: {sorted(set(failed))}"
        missing = {event.id for event in events} - set(await delivered_event_ids())
        assert not missing, f"delivered but not read back: {sorted(missing)}"


def _is_reason(reason: object) -> bool:
    return isinstance(reason, str) and bool(reason.strip())


async def _start(delivery_type: DeliveryType) -> None:
    if delivery_type.start is not None:
        await delivery_type.start()


async def _stop(delivery_type: DeliveryType) -> None:
    if delivery_type.stop is not None:
        await delivery_type.stop()
