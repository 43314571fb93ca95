"""Quotas per submitting source, checked before the API accepts events (before the ingest
buffer: with Kafka, before the record is produced).

Two limits, each optional per source (:class:`~timefuse.domain.quota.QuotaTable`):

- a submission rate, a token bucket per source kept in this process (each API process keeps
  its own: behind a load balancer a source may submit up to the rate times the processes);
- a cap on the source's PENDING events, counted by the store (its per-source counts: one
  look-up) plus what this process is inserting for the source at that moment.

The cap is exact within one process: :meth:`SourceQuotas.admit` reserves the room it grants
until the insert has committed, and counts the reservations taken before it read the store,
so two submissions racing in one process can't both take the last place. Submissions in
*other* processes are not seen until they commit: the cap can be overshot by what they are
inserting for that source at that instant (their requests in flight, each at most a batch).
With Kafka between the API and the store, events still in the topic are not counted yet: the
cap can be overshot by a source's share of the ingest lag. ``timefuse ingest`` stores every
record the API acknowledged and checks no quota: a 202 is a promise to deliver.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from timefuse.domain.event import Event
from timefuse.domain.quota import ANY_SOURCE, QuotaTable, SourceQuota
from timefuse.domain.ratelimit import TokenBucket
from timefuse.ports.store import StoreUnavailable
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store

# Buckets of sources limited by the "*" entry are made as those sources submit; beyond this
# many, full ones (whose source has been quiet) are dropped: a new bucket starts full anyway.
# When most are busy, the next sweep waits until their number has doubled, so that a stream of
# new sources costs a sweep per doubling, not one per source.
MAX_IDLE_BUCKETS = 10_000


class QuotaReason(enum.Enum):
    RATE = "rate"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """Why an event was not accepted.

    :param entry: the quota entry that refused it: the source, or ``*``.
    :param retry_after: for a rate refusal, seconds until the source's next token.
    """

    source: str
    entry: str
    reason: QuotaReason
    message: str
    retry_after: float | None = None


class QuotaExceeded(Exception):
    """A single submission refused by its source's quota."""

    def __init__(self, refusal: QuotaRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass
class Admission:
    """What :meth:`SourceQuotas.admit` let through, in submission order, and what it refused."""

    admitted: list[Event] = field(default_factory=list)
    refused: list[tuple[Event, QuotaRefusal]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """A quota entry and how much of it is in use.

    ``entry`` is the entry holding for ``source``: the source itself, or ``*`` (``None``, and
    ``quota`` too, when nothing limits the source). ``pending`` is
    the store's count (``None`` for ``*`` itself, which covers many sources); ``tokens`` is what
    this process's bucket holds now (``None`` without a rate, or for ``*``); ``rejected``
    counts this process's refusals under the entry, by reason, since it started.
    """

    source: str
    entry: str | None
    quota: SourceQuota | None
    pending: int | None
    tokens: float | None
    rejected: dict[str, int]


class SourceQuotas:
    """:param monotonic: the buckets' clock (seconds, never going back).
    :param count_timeout: the longest the count of a capped source's PENDING events may take
        (``None``: the store's own bound); after it, :class:`StoreUnavailable` (a 503). With
        Kafka the rest of a submission doesn't need the store, so that read is bounded here.
    """

    def __init__(
        self,
        table: QuotaTable,
        store: Store,
        metrics: Metrics,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        count_timeout: float | None = None,
    ) -> None:
        self._table = table
        self._store = store
        self._metrics = metrics
        self._monotonic = monotonic
        self._count_timeout = count_timeout
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = MAX_IDLE_BUCKETS
        # Events this process is inserting now, per capped source: granted, not yet committed.
        self._reserved: Counter[str] = Counter()
        self._rejected: Counter[tuple[str, QuotaReason]] = Counter()

    @property
    def table(self) -> QuotaTable:
        return self._table

    @property
    def bucket_count(self) -> int:
        """Sources with a rate bucket in this process now."""
        return len(self._buckets)

    def set_entry(self, name: str, quota: SourceQuota | None) -> bool:
        """Put ``quota`` under ``name`` (a source, or ``*``) in this process's table, or take
        the entry out (``None``); ``False`` when there was none to take out.

        Until the process restarts, when the configured table is read again. A source's
        bucket keeps what it holds (cut to the new burst) rather than starting full: changing
        a noisy tenant's rate must not hand it a fresh burst.
        """
        entries = dict(self._table.entries)
        if quota is not None:
            entries[name] = quota
        elif entries.pop(name, None) is None:
            return False
        self._table = QuotaTable(entries)
        now = self._monotonic()
        for source, bucket in list(self._buckets.items()):
            entry = self._table.entry_of(source)
            rate = None if entry is None else entry[1].rate
            if entry is None or rate is None:
                del self._buckets[source]
                continue
            held = bucket.available(now)
            bucket.rate, bucket.burst = rate, entry[1].bucket_size
            bucket.tokens = min(held, bucket.burst)
        return True

    @asynccontextmanager
    async def admit(self, events: Sequence[Event]) -> AsyncIterator[Admission]:
        """Split ``events`` into those their sources' quotas admit and those they refuse.

        Inside the block, insert the admitted ones: their room under the PENDING cap stays
        reserved until the block ends. Earlier events of a source are admitted first.
        """
        if not self._table:
            yield Admission(admitted=list(events))
            return
        room, reserved = await self._room(events)
        admission = Admission()
        now = self._monotonic()
        try:
            for event in events:
                refusal = self._check(event, room, now)
                if refusal is None:
                    admission.admitted.append(event)
                else:
                    admission.refused.append((event, refusal))
                    self._count(refusal)
            # Room asked for but refused is freed at once; the rest when the insert is done.
            for source, asked in reserved.items():
                self._reserved[source] -= asked - room.granted[source]
                reserved[source] = room.granted[source]
            yield admission
        finally:
            self._reserved.subtract(reserved)
            for source in reserved:
                if self._reserved[source] <= 0:
                    self._reserved.pop(source, None)

    async def _room(self, events: Sequence[Event]) -> tuple[_Room, Counter[str]]:
        """The room under each capped source's cap, its events' places reserved meanwhile."""
        asked = Counter(event.source for event in events if self._cap_of(event.source) is not None)
        # What other submissions of this process had reserved before this one looked: an
        # insert that commits meanwhile is then counted twice at worst, never missed.
        before = {source: self._reserved[source] for source in asked}
        self._reserved.update(asked)
        room = _Room()
        try:
            # One read for every capped source of the batch, however many it names.
            pending = await self._pending(asked) if asked else {}
            for source in asked:
                cap = self._cap_of(source)
                assert cap is not None
                room.left[source] = cap - pending[source] - before[source]
        except BaseException:
            self._reserved.subtract(asked)
            raise
        return room, asked

    async def _pending(self, sources: Counter[str]) -> Mapping[str, int]:
        counting = self._store.pending_by_source(sources)
        if self._count_timeout is None:
            return await counting
        try:
            return await asyncio.wait_for(counting, self._count_timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the store did not count PENDING events within {self._count_timeout:g} s"
            ) from None

    def _check(self, event: Event, room: _Room, now: float) -> QuotaRefusal | None:
        entry = self._table.entry_of(event.source)
        if entry is None:
            return None
        name, quota = entry
        if quota.max_pending is not None and room.left[event.source] <= 0:
            return QuotaRefusal(
                event.source,
                name,
                QuotaReason.PENDING,
                f"source {event.source[:100]!r} holds its quota of {quota.max_pending} "
                "PENDING events; more are accepted as those are delivered or cancelled",
            )
        if quota.rate is not None:
            bucket = self._bucket(event.source, quota, now)
            if not bucket.try_take(now):
                wait = bucket.wait_seconds(now)
                return QuotaRefusal(
                    event.source,
                    name,
                    QuotaReason.RATE,
                    f"source {event.source[:100]!r} is over its quota of {quota.rate:g} events/s "
                    f"(bursts of {quota.bucket_size}); retry in {wait:.2f} s",
                    retry_after=wait,
                )
        if quota.max_pending is not None:
            room.left[event.source] -= 1
            room.granted[event.source] += 1
        return None

    def counts_pending(self, source: str) -> bool:
        """Whether admitting ``source``'s events needs its PENDING events counted (a store
        read)."""
        return self._cap_of(source) is not None

    def _cap_of(self, source: str) -> int | None:
        entry = self._table.entry_of(source)
        return None if entry is None else entry[1].max_pending

    def _bucket(self, source: str, quota: SourceQuota, now: float) -> TokenBucket:
        bucket = self._buckets.get(source)
        if bucket is None:
            assert quota.rate is not None
            if len(self._buckets) >= self._sweep_at:
                self._drop_full_buckets(now)
                self._sweep_at = max(MAX_IDLE_BUCKETS, 2 * len(self._buckets))
            bucket = TokenBucket(quota.rate, quota.bucket_size, updated=now)
            self._buckets[source] = bucket
        return bucket

    def _drop_full_buckets(self, now: float) -> None:
        for source in [s for s, b in self._buckets.items() if b.available(now) >= b.burst]:
            del self._buckets[source]

    def _count(self, refusal: QuotaRefusal) -> None:
        self._rejected[(refusal.entry, refusal.reason)] += 1
        self._metrics.quota_rejections.labels(refusal.entry, refusal.reason.value).inc()

    # -- what the admin API shows --------------------------------------------------------------

    async def usage(self, sources: Iterable[str] | None = None) -> list[QuotaUsage]:
        """The configured entries, or ``sources`` (with the entry holding for each, if any),
        and what they use."""
        found: list[tuple[str, tuple[str, SourceQuota] | None]]
        if sources is None:
            found = [(name, (name, quota)) for name, quota in self._table.entries.items()]
        else:
            found = [(source, self._table.entry_of(source)) for source in sources]
        return [await self._usage(source, entry) for source, entry in found]

    async def _usage(self, source: str, entry: tuple[str, SourceQuota] | None) -> QuotaUsage:
        name, quota = entry if entry is not None else (None, None)
        # "*" stands for every source without an entry: it has no count or bucket of its own.
        if source == ANY_SOURCE:
            pending = tokens = None
        else:
            pending = (await self._store.pending_by_source([source]))[source]
            tokens = None if quota is None else self._tokens(source, quota)
        rejected = {reason.value: self._rejected[(name or "", reason)] for reason in QuotaReason}
        return QuotaUsage(source, name, quota, pending, tokens, rejected)

    def _tokens(self, source: str, quota: SourceQuota) -> float | None:
        if quota.rate is None:
            return None
        bucket = self._buckets.get(source)
        return float(quota.bucket_size) if bucket is None else bucket.available(self._monotonic())


@dataclass
class _Room:
    left: Counter[str] = field(default_factory=Counter)
    granted: Counter[str] = field(default_factory=Counter)
