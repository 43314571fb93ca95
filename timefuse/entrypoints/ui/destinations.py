"""The destinations page's rows: this process's per-destination state and its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DestinationRow:
    key: str
    breaker: str
    breaker_for_all: bool  # the destination's own breaker holds every source
    held_sources: tuple[str, ...]  # sources held by breakers of their own
    consecutive_failures: int
    trips: int
    in_flight: int
    waiting: int  # claimed events held back for this destination's cap, rate or breaker
    cap: int  # 0: no cap
    rate: float  # deliveries per second; 0: unlimited
    probe_in_seconds: float | None  # while the breaker is open: until one delivery probes


def destination_rows(snapshot: Mapping[str, Mapping[str, object]]) -> list[DestinationRow]:
    """Rows of the gate's snapshot, which carries each destination's limits as applied."""
    return [
        DestinationRow(
            key=key,
            breaker=str(state.get("breaker", "?")),
            breaker_for_all=state.get("breaker_for_all") is True,
            held_sources=_names(state.get("held_sources")),
            consecutive_failures=_int(state.get("consecutive_failures")),
            trips=_int(state.get("trips")),
            in_flight=_int(state.get("in_flight")),
            waiting=_int(state.get("waiting")),
            cap=_int(state.get("concurrency")),
            rate=_float(state.get("rate")) or 0.0,
            probe_in_seconds=_float(state.get("probe_in_seconds")),
        )
        for key, state in snapshot.items()
    ]


def _names(value: object) -> tuple[str, ...]:
    return tuple(str(name) for name in value) if isinstance(value, list) else ()


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
