"""The load of ``timefuse bench day``: clients submitting REST batches on a schedule, and what
is read of every stage once a second (accepted, persisted, delivered, Kafka lag, CPU, memory).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from timefuse.bench.api import SOURCE
from timefuse.bench.processes import BenchError, DayReceiverProcess
from timefuse.bench.procfs import cpu_seconds

BATCH_PATH = "/api/v1/events/batch"
# About the size of a typical webhook body, with the phase, sequence and due time in front.
PAD = "x" * 160
SUBMIT_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.2
_PERSISTED = re.compile(rb"^timefuse_ingest_events_persisted_total(?:\{[^}]*\})? (\S+)$", re.M)


@dataclass(frozen=True, slots=True)
class Phase:
    """``events`` events at ``rate`` per second, the first due at ``first_due`` (wall clock);
    each batch is submitted ``lead`` seconds before its first event is due."""

    number: int
    rate: float
    events: int
    first_due: float
    lead: float
    batch: int

    def due(self, seq: int) -> float:
        return self.first_due + seq / self.rate

    @property
    def last_due(self) -> float:
        return self.due(max(self.events - 1, 0))

    @property
    def seconds(self) -> float:
        return self.events / self.rate


def batch_body(run: str, phase: Phase, start: int, stop: int, destination: str) -> bytes:
    """The JSON of ``POST /api/v1/events/batch`` for sequence numbers ``start..stop-1``.

    Written out rather than encoded from dicts: a day is millions of events, and this runs in
    the bench's own process, on the cores it measures.
    """
    head = f'"source":"{SOURCE}","delivery_type":"http","destination":"{destination}",'
    number = phase.number
    items = []
    for seq in range(start, stop):
        due = phase.due(seq)
        at = datetime.fromtimestamp(due, UTC).isoformat()
        items.append(
            f'{{"external_job_id":"{run}-{number}-{seq}",{head}"scheduled_at":"{at}",'
            f'"payload":{{"p":{number},"s":{seq},"d":{due:.6f},"pad":"{PAD}"}}}}'
        )
    return ('{"events":[' + ",".join(items) + "]}").encode()


@dataclass
class Submitted:
    """What the clients did in one phase."""

    accepted: int = 0
    retries: int = 0
    failed: list[tuple[int, int]] = field(default_factory=list)  # sequence ranges given up
    # Seconds between a batch's planned submission and its 202, one per batch.
    lags: list[float] = field(default_factory=list)
    first_sent: float | None = None
    last_accepted: float | None = None

    def unaccepted(self, seq: int) -> bool:
        return any(start <= seq < stop for start, stop in self.failed)


class Clients:
    """``count`` clients, each one keep-alive connection to one of the API processes."""

    def __init__(self, urls: Sequence[str], count: int, api_key: str | None, run: str) -> None:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._targets = [urls[i % len(urls)] + BATCH_PATH for i in range(count)]
        self.sessions = [
            aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=60),
            )
            for _ in range(count)
        ]
        self._run = run
        self.accepted_total = 0  # over every phase: the sampler's "accepted"

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()

    async def submit(self, phase: Phase, destination: str) -> Submitted:
        """Submit every batch of ``phase`` at its time; return once each is answered."""
        queue: asyncio.Queue[tuple[int, int, float] | None] = asyncio.Queue()
        done = Submitted()
        workers = [
            asyncio.create_task(self._client(i, queue, phase, destination, done))
            for i in range(len(self.sessions))
        ]
        try:
            for start in range(0, phase.events, phase.batch):
                planned = phase.due(start) - phase.lead
                delay = planned - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait((start, min(start + phase.batch, phase.events), planned))
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
        return done

    async def _client(
        self,
        index: int,
        queue: asyncio.Queue[tuple[int, int, float] | None],
        phase: Phase,
        destination: str,
        done: Submitted,
    ) -> None:
        session, url = self.sessions[index], self._targets[index]
        while (item := await queue.get()) is not None:
            start, stop, planned = item
            body = batch_body(self._run, phase, start, stop, destination)
            if done.first_sent is None:
                done.first_sent = time.time()
            if await self._post(session, url, body, done):
                now = time.time()
                done.accepted += stop - start
                self.accepted_total += stop - start
                done.lags.append(now - planned)
                done.last_accepted = now
            else:
                done.failed.append((start, stop))

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, done: Submitted
    ) -> bool:
        """True once the batch is answered 202; retried while the API is unavailable."""
        for attempt in range(SUBMIT_ATTEMPTS):
            if attempt:
                done.retries += 1
                await asyncio.sleep(RETRY_BASE_SECONDS * 2**attempt)
            try:
                async with session.post(url, data=body) as response:
                    text = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                continue
            if status == 202:
                return True
            if status not in (408, 429) and status < 500:
                raise BenchError(f"POST {BATCH_PATH} answered {status}: {text[:300]!r}")
        return False


class LagProbe:
    """The ingest consumer group's lag: the topic's end offsets minus the committed ones.

    Asks the group coordinator for the committed offsets without joining the group, so the
    ingest processes' partition assignment is never disturbed.
    """

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        self._topic = topic
        self._partitions = partitions

    def lag(self) -> int | None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            wanted = [TopicPartition(self._topic, p) for p in range(self._partitions)]
            total = 0
            for tp in self._consumer.committed(wanted, timeout=5.0):
                position = TopicPartition(self._topic, tp.partition)
                low, high = self._consumer.get_watermark_offsets(
                    position, timeout=5.0, cached=False
                )
                total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return total
        except KafkaException:
            return None

    def close(self) -> None:
        self._consumer.close()


def _resident_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return None


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    accepted: int  # by the clients, over every phase
    persisted: int | None  # by the ingest processes, over every phase
    delivered: int  # distinct arrivals of the phase
    duplicates: int
    lag: int | None
    cpu: dict[int, float]  # pid -> CPU seconds so far
    rss_mb: dict[int, float]


class Sampler:
    """Reads every stage; one :meth:`sample` a second makes the run's time series."""

    def __init__(
        self,
        receiver: DayReceiverProcess,
        clients: Clients,
        ingest_urls: Sequence[str],
        pids: Callable[[], dict[int, str]],
        lag: LagProbe | None,
    ) -> None:
        self._receiver = receiver
        self._clients = clients
        self._ingest_urls = list(ingest_urls)
        self.pids = pids
        self._lag = lag
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close(self) -> None:
        await self.session.close()
        if self._lag is not None:
            self._lag.close()

    async def sample(self, phase: int) -> Sample:
        lag_task = asyncio.create_task(self._read_lag())
        persisted = await self._persisted()
        delivered, duplicates = await self._receiver.stats(phase)
        pids = self.pids()
        return Sample(
            at=time.time(),
            accepted=self._clients.accepted_total,
            persisted=persisted,
            delivered=delivered,
            duplicates=duplicates,
            lag=await lag_task,
            cpu={pid: cpu_seconds(pid) for pid in pids},
            rss_mb={pid: mb for pid in pids if (mb := _resident_mb(pid)) is not None},
        )

    async def _read_lag(self) -> int | None:
        if self._lag is None:
            return None
        return await asyncio.to_thread(self._lag.lag)

    async def _persisted(self) -> int | None:
        total = 0
        for url in self._ingest_urls:
            try:
                async with self.session.get(url + "/metrics") as response:
                    text = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                return None
            total += int(sum(float(value) for value in _PERSISTED.findall(text)))
        return total
