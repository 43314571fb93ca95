"""Loading plugins: entry points, TIMEFUSE_PLUGINS, hook validation, origins of types."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from timefuse import hookimpl
from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.plugins.manager import build_registry, load_plugins
from timefuse.plugins.registry import PluginError
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import collect_delivery_types
from timefuse.testing.factories import make_event

Register = Callable[[DeliveryType], None]


async def _ok(event: Event, attempt: int) -> DeliveryOutcome:
    return DeliveryOutcome.success()


def echo_type(name: str = "echo") -> DeliveryType:
    return DeliveryType(name=name, validate_destination=lambda d: None, deliver=_ok)


class EchoPlugin:
    """Imported by the fake entry points below (``tests.unit.test_plugin_manager:EchoPlugin``)."""

    @staticmethod
    @hookimpl
    def register_delivery_types(register: Register) -> None:
        register(echo_type())


class OtherPlugin:
    @staticmethod
    @hookimpl
    def register_delivery_types(register: Register) -> None:
        register(echo_type("other"))


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def install(monkeypatch: pytest.MonkeyPatch, **entry_points: str) -> None:
    """Pretend these ``timefuse`` entry points (name = "module:attr") are installed."""
    fake = [
        importlib.metadata.EntryPoint(name, value, "timefuse")
        for name, value in entry_points.items()
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: fake)


ECHO = "tests.unit.test_plugin_manager:EchoPlugin"
OTHER = "tests.unit.test_plugin_manager:OtherPlugin"


def type_names(settings: Settings, *extra: object) -> list[str]:
    return build_registry(load_plugins(settings, *extra)).names()


# -- which plugins load --------------------------------------------------------------------


def test_loads_every_installed_plugin_when_timefuse_plugins_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, echo=ECHO, other=OTHER)
    assert type_names(settings()) == ["echo", "http", "other"]


def test_loads_only_the_plugins_timefuse_plugins_names(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, echo=ECHO, other=OTHER)
    assert type_names(settings(TIMEFUSE_PLUGINS="other")) == ["http", "other"]


def test_loads_no_external_plugin_when_timefuse_plugins_is_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, echo=ECHO)
    assert type_names(settings(TIMEFUSE_PLUGINS="")) == ["http"]


def test_a_name_in_timefuse_plugins_that_is_not_installed_stops_the_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, echo=ECHO)
    with pytest.raises(PluginError, match=r"TIMEFUSE_PLUGINS names 'nope'.*installed: echo"):
        load_plugins(settings(TIMEFUSE_PLUGINS="echo, nope"))


def test_a_plugin_that_fails_to_import_stops_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, broken="tests.unit.no_such_module:plugin")
    with pytest.raises(PluginError, match=r"plugin 'broken' \(tests.unit.no_such_module"):
        load_plugins(settings())


def test_two_packages_with_one_entry_point_name_stop_the_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = [
        importlib.metadata.EntryPoint("echo", ECHO, "timefuse"),
        importlib.metadata.EntryPoint("echo", OTHER, "timefuse"),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: fake)
    with pytest.raises(PluginError, match=r"entry point 'echo'.*EchoPlugin.*OtherPlugin"):
        load_plugins(settings())
    assert type_names(settings(TIMEFUSE_PLUGINS="")) == ["http"]  # unless neither is loaded


# -- hooks ---------------------------------------------------------------------------------


def test_an_implementation_without_a_spec_is_refused() -> None:
    class Typo:
        @staticmethod
        @hookimpl
        def not_a_hook() -> None: ...

    with pytest.raises(PluginError, match=r"hook timefuse does not have.*not_a_hook"):
        load_plugins(settings(TIMEFUSE_PLUGINS=""), Typo)


def test_an_implementation_with_an_argument_the_hook_lacks_is_refused() -> None:
    class WrongArgument:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register, config: object) -> None: ...

    with pytest.raises(
        PluginError, match=r"(?s)WrongArgument \(passed in\) does not match.*config"
    ):
        load_plugins(settings(TIMEFUSE_PLUGINS=""), WrongArgument)


def test_a_coroutine_implementation_is_refused() -> None:
    class Async:
        @staticmethod
        @hookimpl
        async def delivery_attempted(event: Event) -> None: ...

    with pytest.raises(PluginError, match="delivery_attempted as a coroutine"):
        load_plugins(settings(TIMEFUSE_PLUGINS=""), Async)


def test_an_implementation_may_take_a_subset_of_the_arguments() -> None:
    seen: list[str] = []

    class NoArguments:
        @staticmethod
        @hookimpl
        def register_delivery_types() -> None:
            seen.append("called")

    type_names(settings(TIMEFUSE_PLUGINS=""), NoArguments)
    assert seen == ["called"]


# -- registering types ---------------------------------------------------------------------


def test_two_plugins_claiming_one_type_name_stop_the_start_up_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, echo=ECHO)

    class Impostor:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register) -> None:
            register(echo_type("echo"))

    with pytest.raises(PluginError, match="'echo' is registered twice") as raised:
        type_names(settings(), Impostor)
    message = str(raised.value)
    assert "entry point echo" in message
    assert "test_plugin_manager" in message
    assert "Impostor (passed in)" in message


def test_claiming_a_built_in_type_name_names_timefuse_as_the_other_origin() -> None:
    class Impostor:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register) -> None:
            register(echo_type("http"))

    with pytest.raises(PluginError, match=r"'http' is registered twice: by timefuse \(built-in\)"):
        type_names(settings(TIMEFUSE_PLUGINS=""), Impostor)


def test_a_plugin_raising_while_registering_stops_the_start_up_naming_it() -> None:
    class Broken:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register) -> None:
            raise KeyError("MY_PLUGIN_URL")

    with pytest.raises(PluginError, match=r"Broken \(passed in\) failed to register.*MY_PLUGIN"):
        type_names(settings(TIMEFUSE_PLUGINS=""), Broken)


def test_registering_something_else_than_a_delivery_type_is_refused() -> None:
    class Sloppy:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register) -> None:
            register({"name": "dict"})  # type: ignore[arg-type]

    with pytest.raises(PluginError, match="not a DeliveryType"):
        type_names(settings(TIMEFUSE_PLUGINS=""), Sloppy)


def test_types_carry_their_plugin_origin_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = SimpleNamespace(
        __version__="2.1.0",
        register_delivery_types=hookimpl(lambda register: register(echo_type())),
    )
    config = settings(TIMEFUSE_PLUGINS="")
    registry = build_registry(load_plugins(config, plugin))
    echo, http = registry.get("echo"), registry.get("http")
    assert echo is not None
    assert http is not None
    assert (echo.origin, echo.version) == ("types.SimpleNamespace (passed in)", "2.1.0")
    assert http.origin == "timefuse (built-in)"


async def test_a_deliver_returning_no_outcome_becomes_a_retriable_one() -> None:
    async def forgetful(event: Event, attempt: int) -> DeliveryOutcome:
        return None  # type: ignore[return-value]

    class Forgetful:
        @staticmethod
        @hookimpl
        def register_delivery_types(register: Register) -> None:
            register(DeliveryType(name="forgetful", validate_destination=str, deliver=forgetful))

    config = settings(TIMEFUSE_PLUGINS="")
    registry = build_registry(load_plugins(config, Forgetful))
    delivery_type = registry.get("forgetful")
    assert delivery_type is not None

    outcome = await delivery_type.deliver(make_event(delivery_type="forgetful"), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert "returned None, not a DeliveryOutcome" in (outcome.error or "")


def test_the_kit_collects_a_plugins_types_as_the_plugin_built_them() -> None:
    types = collect_delivery_types(EchoPlugin)
    assert list(types) == ["echo"]
    assert types["echo"].deliver is _ok
    assert types["echo"].origin == "tests.unit.test_plugin_manager.EchoPlugin (passed in)"
