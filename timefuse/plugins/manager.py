"""Loading plugins: built-ins first, then installed packages' ``timefuse`` entry points.

``TIMEFUSE_PLUGINS`` (``ProcessSettings.plugins``) picks the external plugins: unset loads
every installed one, an empty value none, a comma list exactly those (a name that is not
installed stops the start-up). Built-ins always load: they are timefuse, not extensions of it.

Each plugin may declare a settings section (the ``declare_settings`` hook); it is read from the
environment the process's :class:`~timefuse.config.Settings` came from, and handed to that
plugin's ``register_delivery_types`` alone.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar, cast

import pluggy
import structlog

from timefuse.config import Section, Settings, core_variables, read_section
from timefuse.config.declare import declaration_problem
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins import hookspecs
from timefuse.plugins.registry import DeliveryRegistry, PluginError
from timefuse.ports.delivery import Deliver, DeliveryType

BUILTIN_ORIGIN = "timefuse (built-in)"

_log = structlog.get_logger("timefuse.plugins")

Origin = tuple[str, str]  # (where a plugin comes from, its version)

S = TypeVar("S", bound=Section)


@dataclass(frozen=True, slots=True)
class Declared:
    """One plugin's settings section, as declared (not read)."""

    plugin: str
    origin: str
    section: type[Section]


class Plugins:
    """The plugin manager, where each registered plugin came from, and their settings.

    :param environ: what plugins' settings sections are read from.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        origins: dict[str, Origin],
        environ: Mapping[str, str],
    ) -> None:
        self.pm = pm
        self._origins = origins
        self._environ = environ
        self._sections: dict[str, Section] | None = None

    def origin_of(self, plugin: object) -> Origin:
        """``(origin, version)`` of a registered plugin object."""
        name = self.pm.get_name(plugin) or repr(plugin)
        return self._origins.get(name, (name, ""))

    def declarations(self) -> list[Declared]:
        """Every plugin's settings section, checked but not read (for ``--help``).

        :raises PluginError: a declaration is not a section, its hook raised, or it declares
            a variable that timefuse or another plugin declares.
        """
        claimed = {var.env: "timefuse itself" for var in core_variables()}
        found = []
        for impl in self.pm.hook.declare_settings.get_hookimpls():
            name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            origin = self.origin_of(impl.plugin)[0]
            try:
                section = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"plugin {origin} failed to declare its settings: {exc!r}"
                ) from exc
            problem = declaration_problem(section)
            if problem is not None:
                raise PluginError(
                    f"plugin {origin} declares settings timefuse can't read: {problem}"
                )
            section = cast(type[Section], section)
            for var in section.variables():
                if var.env in claimed:
                    raise PluginError(
                        f"plugin {origin} declares {var.env}, which {claimed[var.env]} declares too"
                    )
                claimed[var.env] = f"plugin {origin}"
            found.append(Declared(name, origin, section))
        return found

    def settings_of(self, plugin: object) -> Section | None:
        """The section ``plugin`` declared, read from the environment; ``None`` if none.

        :raises ConfigError: a value the section refuses, naming its variable.
        :raises PluginError: as :meth:`declarations`.
        """
        return self._read().get(self.pm.get_name(plugin) or "")

    def section(self, kind: type[S]) -> S | None:
        """The section of type ``kind`` some plugin declared (a built-in's, say), read."""
        return next((s for s in self._read().values() if isinstance(s, kind)), None)

    def _read(self) -> dict[str, Section]:
        if self._sections is None:
            self._sections = {
                d.plugin: read_section(d.section, self._environ) for d in self.declarations()
            }
        return self._sections


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows timefuse's hooks and has no plugin yet."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def builtin_plugins(settings: Settings) -> list[tuple[str, object]]:
    """timefuse's own delivery types as plugins, by name, given the core sections they use."""
    from timefuse.plugins.http import HttpPlugin
    from timefuse.plugins.kafka import KafkaPlugin

    return [
        ("timefuse.plugins.http", HttpPlugin(settings.dispatch.concurrency)),
        ("timefuse.plugins.kafka", KafkaPlugin(settings.kafka)),
    ]


def load_plugins(settings: Settings, *extra: object) -> Plugins:
    """Register the built-ins, the allowed installed plugins, and ``extra`` plugin objects.

    Plugins' settings sections are read from ``settings.environ`` when first asked for.

    :raises PluginError: a plugin can't be imported, a ``TIMEFUSE_PLUGINS`` name is not
        installed, two packages claim one entry point name, or a plugin implements a hook
        timefuse doesn't have (or an existing one with the wrong arguments, or as a coroutine).
    """
    pm = new_plugin_manager()
    origins: dict[str, Origin] = {}
    for name, plugin in builtin_plugins(settings):
        _register(pm, plugin, name, (BUILTIN_ORIGIN, _own_version()), origins)
    for entry_point in _selected_entry_points(settings.process.plugins):
        origin = _entry_point_origin(entry_point)
        _register(pm, _load(entry_point), entry_point.name, origin, origins)
    for plugin in extra:
        _register(pm, plugin, None, _passed_in_origin(plugin), origins)
    check_hooks(pm)
    return Plugins(pm, origins, settings.environ)


def load_only(*plugins: object, env: Mapping[str, str] | None = None) -> Plugins:
    """Plugins from these objects alone: no built-ins, no entry points (for tests and the kit).

    :param env: what their settings are read from (default: the process environment).
    :raises PluginError: as :func:`load_plugins`.
    """
    pm = new_plugin_manager()
    origins: dict[str, Origin] = {}
    for plugin in plugins:
        _register(pm, plugin, None, _passed_in_origin(plugin), origins)
    check_hooks(pm)
    return Plugins(pm, origins, os.environ if env is None else env)


def _register(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str | None,
    origin: Origin,
    origins: dict[str, Origin],
) -> None:
    try:
        registered = pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {origin[0]} does not match timefuse's hooks: {exc}") from exc
    except ValueError as exc:  # pluggy: this object or this name is registered already
        raise PluginError(f"plugin {origin[0]} can't be registered: {exc}") from exc
    if registered is not None:
        origins[registered] = origin


def _selected_entry_points(allowed: tuple[str, ...] | None) -> list[importlib.metadata.EntryPoint]:
    # Loading entry points ourselves (rather than pm.load_setuptools_entrypoints) lets
    # TIMEFUSE_PLUGINS pick plugins by name and turns every failure into a clear error.
    installed = _installed_entry_points()
    names = list(installed) if allowed is None else list(dict.fromkeys(allowed))
    missing = [name for name in names if name not in installed]
    if missing:
        raise PluginError(
            f"TIMEFUSE_PLUGINS names {', '.join(map(repr, missing))}, but no installed package "
            f"has a {hookspecs.PROJECT!r} entry point by that name "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"
        )
    return [_the_only(name, installed[name]) for name in names]


def _installed_entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for entry_point in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        found.setdefault(entry_point.name, []).append(entry_point)
    return found


def _the_only(
    name: str, entry_points: list[importlib.metadata.EntryPoint]
) -> importlib.metadata.EntryPoint:
    if len(entry_points) > 1:
        # Which one would win depends on sys.path order: refuse rather than guess.
        providers = " and ".join(_entry_point_origin(e)[0] for e in entry_points)
        raise PluginError(
            f"two installed packages name a {hookspecs.PROJECT!r} entry point {name!r}: "
            f"{providers}; uninstall one, or leave {name!r} out of TIMEFUSE_PLUGINS"
        )
    return entry_points[0]


def _load(entry_point: importlib.metadata.EntryPoint) -> object:
    try:
        return entry_point.load()
    except Exception as exc:
        raise PluginError(
            f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc!r}"
        ) from exc


def _entry_point_origin(entry_point: importlib.metadata.EntryPoint) -> Origin:
    dist = entry_point.dist
    if dist is None:
        return (f"entry point {entry_point.name} = {entry_point.value}", "")
    return (f"{dist.name} (entry point {entry_point.name})", dist.version)


def _passed_in_origin(plugin: object) -> Origin:
    if isinstance(plugin, types.ModuleType):
        label = plugin.__name__
    else:
        kind = plugin if isinstance(plugin, type) else type(plugin)
        label = f"{kind.__module__}.{kind.__qualname__}"
    return (f"{label} (passed in)", str(getattr(plugin, "__version__", "")))


def check_hooks(pm: pluggy.PluginManager) -> None:
    """Refuse implementations timefuse would never call, or would call wrongly.

    :raises PluginError: a hook implementation has no spec, or is a coroutine function
        (timefuse calls hooks synchronously, so its body would never run).
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook timefuse does not have: {exc}") from exc
    # list_name_plugin rather than get_plugins: the latter needs hashable plugin objects.
    for _, plugin in pm.list_name_plugin():
        for caller in pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and _is_async(impl.function):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} implements {caller.name} as a coroutine; "
                        "timefuse hooks are plain functions"
                    )


def _is_async(function: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def collect_types(plugins: Plugins) -> list[DeliveryType]:
    """Ask every plugin for its delivery types, as registered, each stamped with its origin.

    :raises PluginError: a plugin's ``register_delivery_types`` raised, passed something that
        is not a :class:`DeliveryType`, or takes ``settings`` without declaring any.
    :raises ConfigError: a plugin's settings have a value its section refuses.
    """
    collected: list[DeliveryType] = []
    for impl in plugins.pm.hook.register_delivery_types.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue  # a wrapper has nothing of its own to register
        origin, version = plugins.origin_of(impl.plugin)
        register = _registering_into(collected, origin, version)
        section = plugins.settings_of(impl.plugin)
        if "settings" in impl.argnames and section is None:
            raise PluginError(
                f"plugin {origin}: register_delivery_types takes `settings`, but the plugin "
                "declares none; return a settings section from a declare_settings hook (see "
                "docs/plugins.md), or drop the argument"
            )
        try:
            impl.function(**_hook_kwargs(impl.argnames, register, section))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {origin} failed to register its types: {exc!r}") from exc
    return collected


def _registering_into(
    collected: list[DeliveryType], origin: str, version: str
) -> Callable[[DeliveryType], None]:
    def register(delivery_type: DeliveryType) -> None:
        if not isinstance(delivery_type, DeliveryType):
            raise PluginError(f"plugin {origin} registered {delivery_type!r}, not a DeliveryType")
        collected.append(replace(delivery_type, origin=origin, version=version))

    return register


def build_registry(plugins: Plugins) -> DeliveryRegistry:
    """The registry of every plugin's delivery types, as the dispatcher runs them.

    :raises PluginError: as :func:`collect_types`, or when two types share a name, a name
        breaks the naming rule, or a timeout is not positive and finite.
    """
    registry = DeliveryRegistry()
    for delivery_type in collect_types(plugins):
        registry.register(replace(delivery_type, deliver=_checked(delivery_type)))
    return registry


def _checked(delivery_type: DeliveryType) -> Deliver:
    deliver = delivery_type.deliver

    # A deliver() that forgets to return would otherwise break the dispatcher's write-back:
    # the event would sit PROCESSING until its lease expired, with the real reason lost.
    async def deliver_checked(event: Event, attempt: int) -> DeliveryOutcome:
        outcome = await deliver(event, attempt)
        if isinstance(outcome, DeliveryOutcome):
            return outcome
        return DeliveryOutcome.retriable(
            f"delivery type {delivery_type.name!r} ({delivery_type.origin}) returned "
            f"{outcome!r}, not a DeliveryOutcome"
        )

    return deliver_checked


def _hook_kwargs(
    argnames: Iterable[str], register: Callable[[DeliveryType], None], settings: Section | None
) -> dict[str, object]:
    # Like pluggy, pass only the arguments an implementation names: a plugin written
    # before a hook gained an argument keeps working.
    offered: dict[str, object] = {"register": register, "settings": settings}
    return {name: offered[name] for name in argnames}


def _own_version() -> str:
    try:
        return importlib.metadata.version("timefuse")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def delivery_observer(plugins: Plugins) -> Callable[[Event, int, DeliveryOutcome, str], None]:
    """Calls every ``delivery_attempted`` implementation, each on its own.

    pluggy's one-call dispatch would stop at the first observer that raises; an audit plugin
    must not lose records because a metrics plugin next to it has a bug.
    """
    hook = plugins.pm.hook.delivery_attempted

    def observe(event: Event, attempt: int, outcome: DeliveryOutcome, worker: str) -> None:
        offered = {"event": event, "attempt": attempt, "outcome": outcome, "worker": worker}
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{name: offered[name] for name in impl.argnames})
            except Exception as exc:
                name = plugins.pm.get_name(impl.plugin)
                _log.warning("delivery observer raised", plugin=name, error=repr(exc))

    return observe
