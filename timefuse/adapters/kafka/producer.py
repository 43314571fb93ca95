"""An asyncio face on confluent-kafka's producer: one awaitable per record, settled by the broker.

librdkafka reports each record's fate in a delivery callback, run by whichever thread calls
``poll``. Here a dedicated thread polls and hands each round's results to the event loop with
one ``call_soon_threadsafe``, so no call on the event loop ever blocks on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from timefuse.adapters.kafka.clients import describe

log = logging.getLogger("timefuse.kafka")

POLL_SECONDS = 0.1
# How long to wait for room in librdkafka's queue before trying again.
QUEUE_FULL_WAIT_SECONDS = 0.005

Headers = list[tuple[str, str | bytes | None]]
Report = tuple[asyncio.Future[None], KafkaError | None]


class ProduceFailed(Exception):
    """The broker did not take a record; ``error`` is librdkafka's reason, if it gave one."""

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.error = error


class AsyncProducer:
    """One confluent-kafka producer and the thread that serves its delivery reports.

    :meth:`start` creates both; :meth:`stop` flushes what is queued and ends the thread.
    """

    def __init__(self, config: dict[str, Any], name: str) -> None:
        self._config = config
        self._name = name
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._fatal = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Filled by delivery callbacks on the thread that polls; only one thread polls at once.
        self._reports: list[Report] = []
        self.last_error: str | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._producer = Producer({**self._config, "error_cb": self._on_error})
        self._thread = threading.Thread(
            target=self._poll_forever, args=(self._producer,), name=self._name, daemon=True
        )
        self._thread.start()

    async def stop(self, timeout: float = 10.0) -> None:
        producer, thread = self._producer, self._thread
        self._producer = self._thread = None
        if producer is None or thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(thread.join)
        if self._fatal.is_set():
            # A fatally failed producer sends nothing more: fail what it holds at once.
            producer.purge()
            timeout = 0.0
        # flush() polls too, so the last delivery reports still reach their awaiting callers.
        left = await asyncio.to_thread(producer.flush, timeout)
        self._hand_over()
        if left:
            log.warning("%s: %d records not acknowledged at shutdown", self._name, left)

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        deadline: float,
    ) -> asyncio.Future[None]:
        """Queue one record; the returned future settles with the broker's answer.

        Waits (without blocking the loop) while librdkafka's local queue is full.

        :param deadline: a ``time.monotonic()`` instant; past it, queueing gives up.
        :raises ProduceFailed: the record could not be queued (queue full past the deadline,
            producer stopped, record refused locally).
        """
        if self._fatal.is_set():
            await self._replace()
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise ProduceFailed(f"{self._name} is not started")
        future: asyncio.Future[None] = loop.create_future()
        callback = functools.partial(self._on_delivery, future)
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                return future
            except BufferError:
                if time.monotonic() >= deadline:
                    raise ProduceFailed(
                        "the local Kafka producer queue stayed full (is the broker reachable?)"
                    ) from None
                await asyncio.sleep(QUEUE_FULL_WAIT_SECONDS)
            except KafkaException as exc:
                raise ProduceFailed(describe(exc), exc.args[0]) from exc

    async def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        timeout: float,
    ) -> None:
        """Send one record and return once the broker acknowledged it.

        :raises ProduceFailed: refused, failed, or not acknowledged within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        future = await self.enqueue(topic, value, key=key, headers=headers, deadline=deadline)
        try:
            await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ProduceFailed(
                f"no acknowledgement from Kafka within {timeout:g} s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            ) from None

    async def _replace(self) -> None:
        # Idempotence can fail fatally (the broker lost the producer's sequence state); the
        # only way on is a new producer, with a new producer id.
        log.warning("%s: replacing the producer after a fatal error", self._name)
        await self.stop()
        self._fatal.clear()
        self.start()

    async def ping(self, topic: str, timeout: float) -> None:
        """Return when the cluster answers a metadata request for ``topic``.

        :raises ProduceFailed: no answer, or the topic is unknown.
        """
        producer = self._producer
        if producer is None:
            raise ProduceFailed(f"{self._name} is not started")
        try:
            metadata = await asyncio.to_thread(producer.list_topics, topic, timeout)
        except KafkaException as exc:
            raise ProduceFailed(describe(exc), exc.args[0]) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ProduceFailed(f"topic {topic!r}: {describe(found.error) if found else 'absent'}")

    def _poll_forever(self, producer: Producer) -> None:
        while not self._stopping.is_set():
            producer.poll(POLL_SECONDS)
            self._hand_over()

    def _hand_over(self) -> None:
        # One wake-up of the loop per poll round, not one per record: at thousands of records
        # a second, a wake-up per record costs more than producing the record.
        if not self._reports or self._loop is None:
            return
        reports, self._reports = self._reports, []
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle, reports)

    def _on_delivery(
        self, future: asyncio.Future[None], error: KafkaError | None, _message: Message
    ) -> None:
        self._reports.append((future, error))

    def _on_error(self, error: KafkaError) -> None:
        # Broker connections coming and going are reported here; the reason is kept so a
        # timed-out submission can say why.
        self.last_error = describe(error)
        if error.fatal():
            self._fatal.set()
            log.error("%s: fatal Kafka error: %s", self._name, self.last_error)
        else:
            log.warning("%s: %s", self._name, self.last_error)


def _settle(reports: list[Report]) -> None:
    for future, error in reports:
        if future.done():  # its caller gave up waiting
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(ProduceFailed(describe(error), error))
