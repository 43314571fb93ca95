"""The HTTP/1.1 transport under http delivery, on its own: connections, limits, closing.

The receivers here are small asyncio servers on loopback that count the connections they
accept and answer only when the test lets them, so nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from yarl import URL

from timefuse.plugins import http_transport
from timefuse.plugins.http_guard import AddressPolicy, DestinationRefused, GuardedResolver
from timefuse.plugins.http_transport import PooledTransport, ServerDisconnectedError

LOOPBACK = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSING = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Receiver:
    """Answers each request once :attr:`release` is set (set from the start unless held)."""

    def __init__(
        self, answer: bytes = OK, *, held: bool = False, answers_per_connection: int | None = None
    ) -> None:
        self.answer = answer
        # When set: a connection's next request after this many is read, then the connection
        # closed without a byte (a server closing an idle connection as the request arrives).
        self.answers_per_connection = answers_per_connection
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self.requests = 0
        self.arrived = asyncio.Condition()
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def until_requests(self, count: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.requests >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                async with self.arrived:
                    self.requests += 1
                    self.arrived.notify_all()
                limit = self.answers_per_connection
                if limit is not None and answered >= limit:
                    return
                await self.release.wait()
                writer.write(self.answer)
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            if not self.open:
                self.closed.set()
            writer.close()


@asynccontextmanager
async def transport(limit: int = 10) -> AsyncIterator[PooledTransport]:
    resolver = GuardedResolver(LOOPBACK)
    pool = PooledTransport(LOOPBACK, resolver, connect_timeout=1.0, limit_per_origin=limit)
    try:
        yield pool
    finally:
        await pool.close()
        await resolver.close()


async def post(pool: PooledTransport, url: str) -> int:
    answer = await pool.send("POST", URL(url), {"Content-Type": "application/json"}, b"{}",
                             timeout=5.0)  # fmt: skip
    return answer.status


async def post_in_turn(receiver: Receiver, count: int) -> list[int]:
    """``count`` POSTs to ``receiver``, one after another, through one transport."""
    url = await receiver.start()
    try:
        async with transport() as pool:
            return [await post(pool, url) for _ in range(count)]
    finally:
        await receiver.stop()


@pytest.mark.asyncio
async def test_requests_one_after_another_share_one_connection() -> None:
    receiver = Receiver()
    statuses = await post_in_turn(receiver, 5)

    assert statuses == [200] * 5
    assert receiver.accepted == 1


@pytest.mark.asyncio
async def test_requests_beyond_the_limit_wait_for_a_connection_instead_of_opening_more() -> None:
    receiver = Receiver(held=True)
    url = await receiver.start()
    try:
        async with transport(limit=2) as pool:
            sending = [asyncio.create_task(post(pool, url)) for _ in range(6)]
            await receiver.until_requests(2)  # two connections, each carrying one request
            assert pool.open_connections == 2
            receiver.release.set()
            statuses = await asyncio.gather(*sending)
    finally:
        await receiver.stop()

    assert statuses == [200] * 6
    assert receiver.most_open == 2
    assert receiver.requests == 6


@pytest.mark.asyncio
async def test_a_connection_the_receiver_closes_is_not_used_again() -> None:
    receiver = Receiver(CLOSING)
    statuses = await post_in_turn(receiver, 3)

    assert statuses == [200] * 3
    assert receiver.accepted == 3


@pytest.mark.asyncio
async def test_a_kept_alive_connection_closed_under_a_request_is_replaced_not_answered() -> None:
    receiver = Receiver(answers_per_connection=1)
    statuses = await post_in_turn(receiver, 3)

    # Each second request met a closing connection and went again on a new one.
    assert statuses == [200] * 3
    assert (receiver.requests, receiver.accepted) == (5, 3)


@pytest.mark.asyncio
async def test_a_close_without_an_answer_on_a_new_connection_is_the_attempts_failure() -> None:
    receiver = Receiver(answers_per_connection=1)
    url = await receiver.start()
    try:
        async with transport() as pool:
            assert await post(pool, url) == 200
            receiver.answers_per_connection = 0  # from now on: every request, closed unanswered
            with pytest.raises(ServerDisconnectedError):
                await post(pool, url)
            with pytest.raises(ServerDisconnectedError):
                await post(pool, url)
    finally:
        await receiver.stop()

    # The second request went again once, on a new connection; the third, on a new connection
    # from the start, was not sent again.
    assert (receiver.requests, receiver.accepted) == (4, 3)


@pytest.mark.asyncio
async def test_closing_ends_every_connection_before_it_returns() -> None:
    receiver = Receiver()
    url = await receiver.start()
    try:
        async with transport() as pool:
            await asyncio.gather(*(post(pool, url) for _ in range(3)))
            assert pool.open_connections >= 1
            await pool.close()
            assert pool.open_connections == 0
            # The receiver read the end of every stream: nothing is left half-open there.
            await asyncio.wait_for(receiver.closed.wait(), 1.0)
    finally:
        await receiver.stop()

    assert receiver.open == 0


@pytest.mark.asyncio
async def test_an_address_the_policy_refuses_is_never_connected_to() -> None:
    receiver = Receiver()
    url = await receiver.start()
    nothing_allowed = AddressPolicy()
    resolver = GuardedResolver(nothing_allowed)
    pool = PooledTransport(nothing_allowed, resolver, connect_timeout=1.0, limit_per_origin=1)
    try:
        with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1"):
            await post(pool, url)
        with pytest.raises(DestinationRefused):
            await post(pool, url.replace("127.0.0.1", "localhost"))
    finally:
        await pool.close()
        await resolver.close()
        await receiver.stop()

    assert receiver.accepted == 0


async def test_the_pools_of_origins_with_nothing_open_are_forgotten_but_not_one_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_transport, "POOLS_KEPT", 2)
    held = Receiver(held=True)
    closing = [Receiver(CLOSING) for _ in range(6)]
    held_url = await held.start()
    urls = [await receiver.start() for receiver in closing]
    async with transport(limit=1) as pooled:
        waiting = asyncio.create_task(post(pooled, held_url))  # in use all along
        await held.until_requests(1)
        in_use = dict(pooled._pools)
        for url in urls:  # each answers and closes: its pool is left empty
            assert await post(pooled, url) == 200
        # Swept as they came: never more than twice the kept number, the one in use stays.
        assert len(pooled._pools) <= 2 * 2
        assert set(in_use.items()) <= set(pooled._pools.items())
        held.release.set()
        assert await waiting == 200
        assert held.most_open == 1
    for receiver in (held, *closing):
        await receiver.stop()
