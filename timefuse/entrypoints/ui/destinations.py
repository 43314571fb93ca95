"""The destinations page's rows: this process's per-destination state and configured limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from timefuse.config import Settings
from timefuse.entrypoints.bootstrap import gate_settings
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.service.destinations import DestinationLimits, GateSettings


@dataclass(frozen=True, slots=True)
class DestinationRow:
    key: str
    breaker: str
    consecutive_failures: int
    trips: int
    in_flight: int
    waiting: int  # claimed events held back for this destination's cap, rate or breaker
    cap: int  # 0: no cap
    rate: float  # deliveries per second; 0: unlimited


def destination_rows(
    snapshot: Mapping[str, Mapping[str, object]],
    settings: Settings,
    registry: DeliveryRegistry | None,
) -> list[DestinationRow]:
    # The same limits the dispatcher was built with (the composition root's own function).
    gate = gate_settings(settings, registry) if registry is not None else None
    rows = []
    for key, state in snapshot.items():
        limits = _limits(key, gate, registry) if gate is not None else None
        rows.append(
            DestinationRow(
                key=key,
                breaker=str(state.get("breaker", "?")),
                consecutive_failures=_int(state.get("consecutive_failures")),
                trips=_int(state.get("trips")),
                in_flight=_int(state.get("in_flight")),
                waiting=_int(state.get("waiting")),
                cap=limits.concurrency if limits else settings.destination_concurrency,
                rate=limits.rate if limits else settings.destination_rate,
            )
        )
    return rows


def _limits(key: str, gate: GateSettings, registry: DeliveryRegistry | None) -> DestinationLimits:
    if key in gate.overrides:
        return gate.overrides[key]
    # "kafka:orders" names a type and its destination; "host:443" names a URL's host.
    prefix, _, rest = key.partition(":")
    if registry is not None and registry.get(prefix) is not None and not rest.isdigit():
        return gate.type_defaults.get(prefix, gate.default)
    return gate.default


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
