"""Claims: dispatchers taking due events under a lease, and learning when the next is due."""

from __future__ import annotations

from typing import Protocol

from timefuse.ports.store.records import ClaimBatch, ClaimRequest, DueFilter, NextDue


class Claims(Protocol):
    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        """Claim PENDING events whose ``next_attempt_at`` has come, earliest first.

        In one transaction, within the request's limit and budgets and among the events its
        filter admits: status PROCESSING, ``locked_by`` = the worker, ``lock_expires_at`` =
        the store's now + the lease, ``attempts`` + 1, ``claim_count`` + 1 (the claim's token),
        the claim's time kept as the start of the attempt should its lease expire. Two
        callers never claim the same event.
        """
        ...

    async def next_due(self, due: DueFilter) -> NextDue:
        """The earliest ``next_attempt_at`` of a PENDING event ``due`` admits."""
        ...
