"""A real HTTP receiver for tests: records every request and answers as each path is told to."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


# A behaviour gets the n-th request (from 1) for one event id on one path and returns a status.
Behaviour = Callable[[int], int]


def always(status: int) -> Behaviour:
    return lambda _n: status


def fail_then(status: int, failures: int, then: int = 200) -> Behaviour:
    return lambda n: status if n <= failures else then


@dataclass
class Receiver:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    delay_seconds: dict[str, float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _by_path: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    port: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    _counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            return await self._answer(request)
        finally:
            self.concurrent -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        record = Received(
            path, {k.lower(): v for k, v in request.headers.items()}, body, time.time()
        )
        self._counts[(path, record.event_id)] += 1
        behaviour = self.behaviours.get(path, always(200))
        status = behaviour(self._counts[(path, record.event_id)])
        delay = self.delay_seconds.get(path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        self.received.append(record)
        self._by_path[path].append(record)
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=status, text="ok" if status < 400 else "no")

    def on(self, path: str) -> list[Received]:
        """What arrived on ``path`` so far (cheap: predicates call it on every arrival)."""
        return list(self._by_path.get(path, []))

    def count(self, path: str) -> int:
        return len(self._by_path.get(path, ()))

    def arrivals(self, path: str, event_id: str) -> int:
        """How many requests for ``event_id`` arrived on ``path``, answered or not yet."""
        return self._counts[(path, event_id)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        assert self._arrived is not None
        try:
            async with self._arrived:
                await asyncio.wait_for(self._arrived.wait_for(predicate), timeout)
        except TimeoutError:
            return predicate()
        return True
