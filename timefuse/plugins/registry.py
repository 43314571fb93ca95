"""The registry of delivery types: one place that checks names and owns lifecycles."""

from __future__ import annotations

import math
import re

import structlog

from timefuse.ports.delivery import DeliveryType

log = structlog.get_logger("timefuse.plugins")

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
NAME_RULE = "lower case letters, digits, '-' or '_', starting with a letter, at most 64 characters"


class PluginError(Exception):
    """A plugin can't be loaded or registered; start-up stops with this message."""


def type_name_problem(name: object) -> str | None:
    """``None`` when ``name`` may name a delivery type, else what is wrong with it."""
    if not isinstance(name, str) or not _NAME.match(name):
        problem = f"delivery type name {name!r} must be {NAME_RULE}"
        if isinstance(name, str) and _NAME.match(name.lower()):
            # Submissions name a type in any case (it is lowered before the lookup), so a
            # lower-case registration loses nothing: say so, rather than only refuse.
            problem += (
                f"; register {name.lower()!r}: clients may still submit {name!r}, since "
                "names are matched case-insensitively"
            )
        return problem
    return None


def timeout_problem(timeout_seconds: object) -> str | None:
    """``None`` for a usable per-attempt timeout, else what is wrong with it."""
    # bool is an int; NaN and infinity compare False with everything, so `<= 0` alone lets
    # them through and asyncio.wait_for would then never cut a hanging attempt off.
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not math.isfinite(timeout_seconds)
        or timeout_seconds <= 0
    ):
        return f"needs a positive, finite timeout_seconds, got {timeout_seconds!r}"
    return None


class DeliveryRegistry:
    """The delivery types of one process, by name."""

    def __init__(self) -> None:
        self._types: dict[str, DeliveryType] = {}
        self._started: list[DeliveryType] = []

    def register(self, delivery_type: DeliveryType) -> None:
        """Add a type; :class:`PluginError` for a bad name, timeout, or a name already taken."""
        name = delivery_type.name
        problem = type_name_problem(name)
        if problem is not None:
            raise PluginError(f"{problem} (registered by {delivery_type.origin})")
        existing = self._types.get(name)
        if existing is not None:
            raise PluginError(
                f"delivery type {name!r} is registered twice: by {existing.origin} "
                f"and by {delivery_type.origin}"
            )
        problem = timeout_problem(delivery_type.timeout_seconds)
        if problem is not None:
            raise PluginError(f"delivery type {name!r} from {delivery_type.origin} {problem}")
        for part in ("validate_destination", "deliver"):
            if not callable(getattr(delivery_type, part)):
                raise PluginError(
                    f"delivery type {name!r} from {delivery_type.origin}: {part} is not callable"
                )
        self._types[name] = delivery_type

    def get(self, name: str) -> DeliveryType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def types(self) -> list[DeliveryType]:
        return [self._types[name] for name in self.names()]

    def check_destination(self, name: str, destination: str) -> str | None:
        """``None`` when ``destination`` suits type ``name``, else the reason it doesn't."""
        delivery_type = self._types.get(name)
        if delivery_type is None:
            known = ", ".join(self.names()) or "none"
            return f"unknown delivery type {name!r} (registered: {known})"
        try:
            return delivery_type.validate_destination(destination)
        except Exception as exc:
            # A plugin's bug must not turn a submission into a 500: refuse the event instead.
            log.warning(
                "destination check raised",
                delivery_type=name,
                origin=delivery_type.origin,
                error=repr(exc),
            )
            return f"delivery type {name!r} could not check this destination ({exc!r})"

    async def start(self) -> None:
        """Start every type; if one fails, stop those already started and raise PluginError."""
        started = {t.name for t in self._started}
        for delivery_type in self.types():
            if delivery_type.name in started:
                continue
            try:
                if delivery_type.start is not None:
                    await delivery_type.start()
            except Exception as exc:
                await self.stop()
                raise PluginError(
                    f"delivery type {delivery_type.name!r} from {delivery_type.origin} "
                    f"failed to start: {exc!r}"
                ) from exc
            self._started.append(delivery_type)

    async def stop(self) -> None:
        """Stop started types, last started first; one failing stop doesn't skip the rest."""
        while self._started:
            delivery_type = self._started.pop()
            if delivery_type.stop is None:
                continue
            try:
                await delivery_type.stop()
            except Exception as exc:
                # Shutdown goes on: the store and buffer still have to be closed after this.
                log.warning(
                    "delivery type failed to stop",
                    delivery_type=delivery_type.name,
                    origin=delivery_type.origin,
                    error=repr(exc),
                )
