"""Hook specifications: how a plugin adds delivery types to timefuse.

A complete plugin, in a module of its own package::

    from timefuse import hookimpl
    from timefuse.domain import DeliveryOutcome, Event
    from timefuse.ports.delivery import DeliveryType


    def validate(destination: str) -> str | None:
        return None if destination.startswith("echo:") else "must start with echo:"


    async def deliver(event: Event, attempt: int) -> DeliveryOutcome:
        reason = validate(event.destination)  # the rule may have changed since submission
        if reason is not None:
            return DeliveryOutcome.permanent(f"invalid destination: {reason}")
        print(event.id, attempt, event.payload.decode())
        return DeliveryOutcome.success()


    @hookimpl
    def register_delivery_types(register):
        register(DeliveryType(name="echo", validate_destination=validate, deliver=deliver))

and in that package's ``pyproject.toml``::

    [project.entry-points.timefuse]
    echo = "my_package.plugin"

Then ``pip install`` it next to timefuse: clients submit ``"delivery_type": "echo"``, and
``timefuse plugins`` lists it. ``TIMEFUSE_PLUGINS=echo`` loads only that external plugin.

A plugin with settings declares them as a section (:class:`timefuse.config.Section`) and
receives that section, read from the environment, in ``register_delivery_types``::

    from dataclasses import dataclass

    from timefuse.config import Section, setting


    @dataclass(frozen=True)
    class EchoSettings(Section, prefix="TIMEFUSE_ECHO_", title="echo delivery"):
        prefix: str = setting("", "Text printed before each payload.")  # TIMEFUSE_ECHO_PREFIX


    @hookimpl
    def declare_settings():
        return EchoSettings


    @hookimpl
    def register_delivery_types(register, settings: EchoSettings):
        ...

``timefuse --help`` lists them with timefuse's own.

An implementation takes any subset of a hook's arguments, by name; it must be a plain
function (timefuse calls hooks synchronously), and a function named like a hook below but
for a hook that doesn't exist stops the start-up. ``docs/plugins.md`` is the full guide, and
:mod:`timefuse.testing.delivery_contract` the test suite a delivery type should pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from timefuse.config import Section
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.ports.delivery import DeliveryType

PROJECT = "timefuse"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def declare_settings() -> type[Section]:  # type: ignore[empty-body]
    """Declare this plugin's settings: return its section class.

    Called once per process when plugins load, before ``register_delivery_types``. The
    section (a frozen dataclass subclassing :class:`timefuse.config.Section`, every field
    declared with :func:`timefuse.config.setting`) names each variable, its type, default and
    meaning; ``timefuse --help`` lists them, and ``register_delivery_types`` receives the
    section read from the environment. A variable another section declares stops the
    start-up, as does a value the section's parsers refuse (the message names the variable).
    """


@hookspec
def register_delivery_types(register: Callable[[DeliveryType], None], settings: Any) -> None:
    """Add delivery types by calling ``register`` once per type.

    Called once per process at start-up, after every plugin is loaded and before the API or
    the dispatcher starts; the return value is ignored. Build clients here but open nothing:
    connections belong in the type's ``start``, which runs later, inside the event loop.

    :param register: takes a :class:`~timefuse.ports.delivery.DeliveryType`; timefuse checks
        names in one place, and two plugins claiming one name stop the start-up with an error
        naming both. Raising here stops the start-up too, with the plugin named.
    :param settings: the plugin's own section (see ``declare_settings``), read from the
        environment. A plugin that declares none must not take this argument.
    """


@hookspec
def delivery_attempted(event: Event, attempt: int, outcome: DeliveryOutcome, worker: str) -> None:
    """Observe every delivery attempt's outcome (audit trails, custom metrics).

    Called by the dispatcher after each attempt's outcome is known and before it is written
    back, on the event loop; the return value is ignored. Must be quick, must not block and
    must not raise: an observer's exception is logged and ignored.

    :param event: the event as claimed (status PROCESSING).
    :param attempt: the attempt number, from 1.
    :param outcome: what the delivery type reported (a timeout or an exception raised by the
        type arrive here as a RETRIABLE outcome).
    :param worker: the dispatcher's worker id.
    """
