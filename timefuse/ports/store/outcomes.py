"""Outcomes: what became of claimed events, written back under their claims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timefuse.ports.store.records import ClaimRef, OutcomeUpdate


class Outcomes(Protocol):
    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        """Write attempt outcomes back in one transaction, keeping each attempt's record.

        An update applies only while its event is PROCESSING under the claim it quotes
        (``ref``: the token and its worker), and then clears the lease. The attempt record is
        kept exactly when its update applies, numbered by the store, and so is its
        ``callback`` (inserted as ``insert_many`` would, in the same transaction: a notice
        whose id or dedup key is stored already is skipped). At most one update per event.
        Returns the ids of the events whose update applied: one fenced out (its lease lost,
        the event claimed again or finished meanwhile) is not among them, and stores no
        callback, so a completion callback follows exactly from an outcome that applied.
        """
        ...

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float) -> int:
        """Return claimed events to PENDING, due ``delay_seconds`` after the store's now,
        their attempt not counted (``attempts`` - 1), the lease cleared, no attempt record.

        For attempts never made (an open breaker, a shutdown, a wait that ran too long).
        Applies only to events still under the claims quoted. Returns how many went back.
        """
        ...

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        """Push the leases of claims still held to the store's now + ``lease_seconds``;
        returns how many were extended (a claim recovered meanwhile is not)."""
        ...
