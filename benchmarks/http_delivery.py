"""How close HttpDelivery.deliver comes to a bare aiohttp POST loop.

Starts a receiver in a subprocess (so it does not share this process's event loop or core),
then alternates rounds of (1) raw aiohttp POSTs through one session and (2) HttpDelivery.deliver,
both driven the way the dispatcher drives deliveries: a semaphore of N, one task per request.
Prints events/s and client CPU per request for each, and their ratio.

    .venv/bin/python benchmarks/http_delivery.py [--requests 20000] [--concurrency 100]
        [--rounds 3] [--receiver raw|aiohttp] [--uvloop]

``--receiver raw`` answers from a bare asyncio protocol; it keeps the receiver from being the
bottleneck, which an aiohttp.web receiver is on a 2-core machine. Client CPU per request is
the figure to compare when the receiver limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, cast

import aiohttp

from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.plugins.http import HttpDelivery
from timefuse.testing.factories import make_event

# A send returns None when the receiver accepted the request, else what went wrong.
Send = Callable[[int], Coroutine[Any, Any, str | None]]


class Round(NamedTuple):
    rate: float  # events/s
    cpu_us: float  # client CPU per request, µs
    failures: int
    first_error: str


# --- receiver (runs in the subprocess) ---------------------------------------------------------


class _RawReceiver(asyncio.Protocol):
    """Answers every HTTP/1.1 request with 204; just enough parsing for keep-alive clients."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports don't subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answers = 0
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            for line in bytes(self._buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                break
            del self._buffer[: end + 4 + length]
            answers += 1
        if answers and self._transport is not None:
            self._transport.write(b"HTTP/1.1 204 No Content\r\n\r\n" * answers)


async def _serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "raw":
        server = await loop.create_server(_RawReceiver, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
    else:
        from aiohttp import web

        async def receive(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
    print(port, flush=True)
    # The parent closes our stdin when it is done: that is the signal to exit.
    await loop.run_in_executor(None, sys.stdin.read)


# --- client ------------------------------------------------------------------------------------


async def _drive(send: Send, requests: int, concurrency: int) -> Round:
    """One task per request under a semaphore, as the dispatcher runs deliveries."""
    semaphore = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    tasks: set[asyncio.Task[str | None]] = set()

    def finished(task: asyncio.Task[str | None]) -> None:
        tasks.discard(task)
        semaphore.release()
        if task.cancelled():
            errors.append("cancelled")
        elif (exc := task.exception()) is not None:
            errors.append(repr(exc))
        elif (error := task.result()) is not None:
            errors.append(error)

    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(requests):
        await semaphore.acquire()
        task = asyncio.create_task(send(i))
        tasks.add(task)
        task.add_done_callback(finished)
    while tasks:
        await asyncio.wait(set(tasks))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Round(requests / wall, cpu / requests * 1e6, len(errors), errors[0] if errors else "")


def _events(url: str, count: int, payload: bytes) -> list[Event]:
    return [
        make_event(external_job_id=f"job-{i}", source="benchmark", destination=url, payload=payload)
        for i in range(count)
    ]


async def _compare(url: str, args: argparse.Namespace) -> None:
    payload = b'{"order": 42, "items": [1, 2, 3], "note": "' + b"x" * 200 + b'"}'
    events = _events(url, args.requests, payload)
    raw_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
    # Loopback must be allowed once the SSRF guard lands; unknown variables are ignored until then.
    env = {
        "TIMEFUSE_CONCURRENCY": str(args.concurrency),
        "TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    delivery = HttpDelivery(Settings.from_env(env))
    await delivery.start()

    async def raw_post(i: int) -> str | None:
        headers = {"Content-Type": "application/json"}
        async with raw_session.post(url, data=payload, headers=headers) as response:
            await response.read()
            return None if response.status < 300 else f"HTTP {response.status}"

    async def deliver(i: int) -> str | None:
        outcome = await delivery.deliver(events[i], 1)
        return None if outcome.succeeded else outcome.error

    results: dict[str, list[Round]] = {"raw aiohttp": [], "deliver": []}
    try:
        for send in (raw_post, deliver):  # warm-up: open the pools' connections
            await _drive(send, min(2000, args.requests), args.concurrency)
        for _ in range(args.rounds):
            results["raw aiohttp"].append(await _drive(raw_post, args.requests, args.concurrency))
            results["deliver"].append(await _drive(deliver, args.requests, args.concurrency))
    finally:
        await raw_session.close()
        await delivery.stop()
    _report(results, args)


def _report(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"receiver={args.receiver} loop={loop_name} requests={args.requests} "
        f"concurrency={args.concurrency} rounds={args.rounds} (medians)"
    )
    medians = {}
    for name, rounds in results.items():
        rate = statistics.median(r.rate for r in rounds)
        cpu = statistics.median(r.cpu_us for r in rounds)
        failures = sum(r.failures for r in rounds)
        medians[name] = (rate, cpu)
        print(f"  {name:12} {rate:9.0f} events/s  {cpu:6.1f} µs CPU/request  failures={failures}")
        if failures:
            print(f"    first failure: {next(r.first_error for r in rounds if r.failures)}")
    (raw_rate, raw_cpu), (rate, cpu) = medians["raw aiohttp"], medians["deliver"]
    print(f"  deliver/raw: {rate / raw_rate:.2f} of the rate, {cpu / raw_cpu:.2f} of the CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receiver", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument("--uvloop", action="store_true", help="run both sides on uvloop")
    parser.add_argument("--serve", choices=("raw", "aiohttp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    command = [sys.executable, __file__, "--serve", args.receiver]
    if args.uvloop:
        command.append("--uvloop")
    receiver = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        asyncio.run(_compare(f"http://127.0.0.1:{port}/hook", args))
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
