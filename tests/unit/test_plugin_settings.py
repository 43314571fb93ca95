"""A plugin's own settings: declared through a hook, read from the environment, its alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from timefuse import hookimpl
from timefuse.config import ConfigError, Section, Settings, integer, setting
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.entrypoints.settings_help import help_text, setting_groups
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.kafka import KafkaDeliverySettings
from timefuse.plugins.manager import build_registry, load_plugins
from timefuse.plugins.registry import PluginError
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import collect_delivery_types

Register = Callable[[DeliveryType], None]


@dataclass(frozen=True)
class EchoSettings(Section, prefix="TIMEFUSE_ECHO_", title="echo delivery"):
    greeting: str = setting("hello", "What the echo type prints first.")
    repeat: int = setting("1", "How many times it prints each payload.", integer(1, 10))


async def _ok(event: Event, attempt: int) -> DeliveryOutcome:
    return DeliveryOutcome.success()


class EchoPlugin:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def declare_settings(self) -> type[EchoSettings]:
        return EchoSettings

    @hookimpl
    def register_delivery_types(self, register: Register, settings: EchoSettings) -> None:
        self.seen.append(settings)
        register(DeliveryType(name="echo", validate_destination=lambda d: None, deliver=_ok))


def register_with(env: dict[str, str], *plugins: object) -> list[str]:
    settings = Settings.from_env({"TIMEFUSE_PLUGINS": "", **env})
    return build_registry(load_plugins(settings, *plugins)).names()


def test_a_plugin_receives_its_own_section_read_from_the_environment() -> None:
    plugin = EchoPlugin()
    register_with({"TIMEFUSE_ECHO_REPEAT": "3", "TIMEFUSE_CONCURRENCY": "7"}, plugin)
    assert plugin.seen == [EchoSettings(greeting="hello", repeat=3)]


def test_variables_are_named_by_the_prefix_and_the_field_unless_named_explicitly() -> None:
    assert [var.env for var in EchoSettings.variables()] == [
        "TIMEFUSE_ECHO_GREETING",
        "TIMEFUSE_ECHO_REPEAT",
    ]
    assert [var.env for var in KafkaDeliverySettings.variables()] == [
        "TIMEFUSE_KAFKA_ALLOWED_TOPICS",
        "TIMEFUSE_KAFKA_DELIVERY_TIMEOUT_SECONDS",
    ]


def test_a_bad_value_of_a_plugins_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TIMEFUSE_ECHO_REPEAT must be between 1 and 10"):
        register_with({"TIMEFUSE_ECHO_REPEAT": "11"}, EchoPlugin())


def test_a_plugin_declaring_a_variable_timefuse_declares_stops_the_start_up() -> None:
    @dataclass(frozen=True)
    class Greedy(Section):
        concurrency: int = setting("5", "Mine now.", integer())  # TIMEFUSE_CONCURRENCY

    class GreedyPlugin:
        @hookimpl
        def declare_settings(self) -> type[Section]:
            return Greedy

    with pytest.raises(PluginError, match="declares TIMEFUSE_CONCURRENCY, which timefuse itself"):
        register_with({}, GreedyPlugin())


def test_two_plugins_declaring_one_variable_stop_the_start_up_naming_the_first() -> None:
    class Copycat:
        @hookimpl
        def declare_settings(self) -> type[Section]:
            return EchoSettings

    with pytest.raises(PluginError, match=r"TIMEFUSE_ECHO_GREETING, which plugin .*EchoPlugin"):
        register_with({}, EchoPlugin(), Copycat())


def test_taking_settings_without_declaring_any_is_refused_with_the_way_out() -> None:
    class Undeclared:
        @hookimpl
        def register_delivery_types(self, register: Register, settings: object) -> None:
            raise AssertionError("not called")

    with pytest.raises(PluginError, match="takes `settings`, but the plugin declares none"):
        register_with({}, Undeclared())


@pytest.mark.parametrize("declared", [dict, "TIMEFUSE_X", Settings])
def test_a_declaration_that_is_not_a_section_is_refused(declared: object) -> None:
    class Odd:
        @hookimpl
        def declare_settings(self) -> object:
            return declared

    with pytest.raises(PluginError, match="declares settings timefuse can't read"):
        register_with({}, Odd())


def test_a_section_field_without_setting_is_refused() -> None:
    @dataclass(frozen=True)
    class Half(Section, prefix="TIMEFUSE_HALF_"):
        root: str = setting("x", "Declared.")
        extra: int = 3

    class HalfPlugin:
        @hookimpl
        def declare_settings(self) -> type[Section]:
            return Half

    with pytest.raises(PluginError, match=r"field 'extra' of .*Half is not declared"):
        register_with({}, HalfPlugin())


def test_help_lists_timefuse_then_each_plugins_settings_under_its_title() -> None:
    plugins = load_plugins(Settings.from_env({"TIMEFUSE_PLUGINS": ""}), EchoPlugin())
    groups = setting_groups(plugins)
    titles = [group.title for group in groups]
    assert titles[0] == "Event store"
    assert titles[-3:] == [
        "http delivery, from timefuse (built-in)",
        "kafka delivery, from timefuse (built-in)",
        "echo delivery, from tests.unit.test_plugin_settings.EchoPlugin (passed in)",
    ]
    text = help_text(groups)
    assert "TIMEFUSE_ECHO_REPEAT" in text.split("echo delivery")[1]
    assert "TIMEFUSE_HTTP_ALLOWED_NETWORKS" in text.split("http delivery")[1]


def test_the_kit_reads_a_plugins_settings_from_the_env_it_is_given_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIMEFUSE_ECHO_GREETING", "from the process")
    plugin = EchoPlugin()
    collect_delivery_types(plugin, {"TIMEFUSE_ECHO_REPEAT": "2"})
    assert plugin.seen == [EchoSettings(greeting="hello", repeat=2)]


def test_the_http_section_is_found_by_its_type_for_the_admin_api() -> None:
    settings = Settings.from_env({"TIMEFUSE_PLUGINS": "", "TIMEFUSE_SIGNING_KEYS_FILE": ""})
    section = load_plugins(settings).section(HttpSettings)
    assert section == HttpSettings()
