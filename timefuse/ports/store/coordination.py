"""Coordination of processes sharing a store: leadership, heartbeats, lease recovery."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from timefuse.ports.store.records import WorkerBeat, WorkerRecord


class Coordination(Protocol):
    async def acquire_leadership(self, role: str, holder: str, ttl_seconds: float) -> bool:
        """Lead ``role`` for ``ttl_seconds`` of the store's clock, or keep leading it.

        ``True`` when ``holder`` leads now: nobody held it, the holder's time had run out, or
        ``holder`` held it already (the lease is renewed). At most one holder at a time.
        """
        ...

    async def release_leadership(self, role: str, holder: str) -> None:
        """Give up ``role`` if ``holder`` leads it, so another process may take it at once."""
        ...

    async def heartbeat(self, beat: WorkerBeat) -> None:
        """Record that the worker is alive now (the store's clock)."""
        ...

    async def workers(self) -> list[WorkerRecord]:
        """Every worker heard of and not forgotten, most recently seen first."""
        ...

    async def forget_workers(self, silent_seconds: float) -> int:
        """Forget workers not heard of for longer than ``silent_seconds``; how many went."""
        ...

    async def recover_expired_leases(
        self, dead_workers: Collection[str] = (), *, silent_seconds: float | None = None
    ) -> int:
        """Apply :func:`timefuse.domain.lease.expire_lease` to every lost claim.

        A claim is lost when its lease has expired (``lock_expires_at`` < the store's now) or
        its worker is dead: among ``dead_workers`` and, with ``silent_seconds``, still silent
        when the recovery runs. Death is decided by the recovery itself, atomically with
        respect to heartbeats: a worker of ``dead_workers`` counts as dead only while its
        heartbeat row (:meth:`heartbeat`) last heard of it more than ``silent_seconds`` ago
        by the store's clock, read in the same transaction as the recovery (PostgreSQL: the
        worker's row locked with the claims; a row a heartbeat is writing at that moment
        means alive). A worker heard of since the caller listed it (it came back and perhaps
        claimed again), or without a heartbeat row, keeps its claims; their leases still
        expire. Without ``silent_seconds`` every claim of ``dead_workers`` is lost whatever
        their heartbeats say: a restarted process taking back its predecessor's claims under
        its own worker id. Each keeps an attempt record: outcome RETRIABLE,
        error :data:`timefuse.domain.lease.LEASE_EXPIRED_ERROR`, worker = the holder,
        ``started_at`` = the claim's time, duration = now - the claim's time. Each event this
        dead-letters gets, in the same transaction, the failure notice of
        :func:`timefuse.domain.callback.lease_expiry_callback` (the event as recovered, now),
        inserted as ``insert_many`` would (an id already stored is kept), so a
        notice is neither lost nor made twice. Returns how many claims it recovered.
        """
        ...
