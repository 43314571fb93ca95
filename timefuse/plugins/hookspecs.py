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

An implementation takes any subset of a hook's arguments, by name; it must be a plain
function (timefuse calls hooks synchronously), and a function named like a hook below but
for a hook that doesn't exist stops the start-up. ``docs/plugins.md`` is the full guide, and
:mod:`timefuse.testing.delivery_contract` the test suite a delivery type should pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.ports.delivery import DeliveryType

PROJECT = "timefuse"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_delivery_types(register: Callable[[DeliveryType], None], settings: Settings) -> None:
    """Add delivery types by calling ``register`` once per type.

    Called once per process at start-up, after every plugin is loaded and before the API or
    the dispatcher starts; the return value is ignored. Build clients here but open nothing:
    connections belong in the type's ``start``, which runs later, inside the event loop.

    :param register: takes a :class:`~timefuse.ports.delivery.DeliveryType`; timefuse checks
        names in one place, and two plugins claiming one name stop the start-up with an error
        naming both. Raising here stops the start-up too, with the plugin named.
    :param settings: timefuse's configuration, for types that share its settings.
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
