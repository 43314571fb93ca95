from __future__ import annotations

import types

from timefuse import hookimpl
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins.manager import delivery_observer, load_only
from timefuse.testing import make_event


def plugin(name: str, seen: list[str], fail: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def delivery_attempted(event: Event, attempt: int, outcome: DeliveryOutcome) -> None:
        seen.append(f"{name}:{event.id}:{attempt}:{outcome.kind.value}")
        if fail:
            raise RuntimeError("observer bug")

    module.delivery_attempted = delivery_attempted  # type: ignore[attr-defined]
    return module


def test_every_observer_sees_the_outcome_even_when_another_raises() -> None:
    seen: list[str] = []
    observe = delivery_observer(load_only(plugin("audit", seen, fail=True), plugin("m", seen)))
    event = make_event()
    observe(event, 2, DeliveryOutcome.retriable("HTTP 503", 503), "worker-1")
    assert sorted(seen) == sorted([f"audit:{event.id}:2:RETRIABLE", f"m:{event.id}:2:RETRIABLE"])
