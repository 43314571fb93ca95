"""The delivery type registry: naming and timeout rules, and start/stop of every type."""

from __future__ import annotations

import math

import pytest

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins.registry import DeliveryRegistry, PluginError, type_name_problem
from timefuse.ports.delivery import DeliveryType


async def _deliver(event: Event, attempt: int) -> DeliveryOutcome:
    return DeliveryOutcome.success()


def a_type(name: str = "echo", **overrides: object) -> DeliveryType:
    fields: dict[str, object] = {
        "name": name,
        "validate_destination": lambda destination: None,
        "deliver": _deliver,
        "origin": f"plugin-{name}",
    }
    fields.update(overrides)
    return DeliveryType(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["http", "kafka", "file", "s3-bucket", "my_type2", "a" * 64])
def test_accepts_lower_case_names(name: str) -> None:
    assert type_name_problem(name) is None
    DeliveryRegistry().register(a_type(name))


@pytest.mark.parametrize("name", ["", "HTTP", "Http", "2fast", "-x", "with space", "a" * 65, "é"])
def test_refuses_other_names_naming_the_plugin(name: str) -> None:
    with pytest.raises(PluginError, match="must be lower case") as raised:
        DeliveryRegistry().register(a_type(name))
    assert f"plugin-{name}" in str(raised.value)


def test_an_upper_case_name_is_refused_with_the_lower_case_one_to_register() -> None:
    with pytest.raises(PluginError, match="register 'sqlite_sink'") as raised:
        DeliveryRegistry().register(a_type("SQLITE_SINK"))
    assert "matched case-insensitively" in str(raised.value)


def test_a_name_no_case_can_fix_gets_no_lower_case_suggestion() -> None:
    assert "register" not in (type_name_problem("2Fast") or "")


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan, math.inf, True])
def test_refuses_a_timeout_that_is_not_positive_and_finite(timeout: float) -> None:
    with pytest.raises(PluginError, match="positive, finite timeout_seconds"):
        DeliveryRegistry().register(a_type(timeout_seconds=timeout))


def test_refuses_a_name_taken_naming_both_origins() -> None:
    registry = DeliveryRegistry()
    registry.register(a_type("echo", origin="first-package"))
    with pytest.raises(PluginError, match="'echo' is registered twice") as raised:
        registry.register(a_type("echo", origin="second-package"))
    assert "first-package" in str(raised.value)
    assert "second-package" in str(raised.value)


def test_refuses_a_deliver_that_is_not_callable() -> None:
    with pytest.raises(PluginError, match="deliver is not callable"):
        DeliveryRegistry().register(a_type(deliver="not a function"))


def test_reports_an_unknown_type_with_the_known_ones() -> None:
    registry = DeliveryRegistry()
    registry.register(a_type("echo"))
    assert registry.check_destination("nope", "x") == (
        "unknown delivery type 'nope' (registered: echo)"
    )


def test_a_destination_check_that_raises_refuses_the_destination() -> None:
    def broken(destination: str) -> str | None:
        raise ValueError("bug")

    registry = DeliveryRegistry()
    registry.register(a_type("echo", validate_destination=broken))
    assert registry.check_destination("echo", "x") == (
        "delivery type 'echo' could not check this destination (ValueError('bug'))"
    )


class Lifecycle:
    def __init__(self, log: list[str], name: str, fail_start: bool = False) -> None:
        self.log, self.name, self.fail_start = log, name, fail_start

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            raise RuntimeError("no broker")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.name == "a":
            raise RuntimeError("stop failed")


def registry_of(log: list[str], *names: str, failing: str = "") -> DeliveryRegistry:
    registry = DeliveryRegistry()
    for name in names:
        life = Lifecycle(log, name, fail_start=name == failing)
        registry.register(a_type(name, start=life.start, stop=life.stop))
    return registry


async def test_starts_every_type_once_and_stops_them_in_reverse() -> None:
    log: list[str] = []
    registry = registry_of(log, "a", "b")
    await registry.start()
    await registry.start()  # a second start doesn't start anything twice
    await registry.stop()  # a's stop raises: logged, and nothing else is skipped
    await registry.stop()
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_a_type_failing_to_start_stops_the_started_ones_and_names_itself() -> None:
    log: list[str] = []
    registry = registry_of(log, "a", "b", "c", failing="b")
    with pytest.raises(PluginError, match=r"'b' from plugin-b failed to start: .*no broker"):
        await registry.start()
    assert log == ["start a", "start b", "stop a"]
