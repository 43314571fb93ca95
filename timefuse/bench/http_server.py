"""HTTP servers for the API compared: requests/s, and the limits slow and hostile clients meet.

Each variant serves the real API (SQLite store, inline ingest, no dispatcher) in a subprocess:

- ``timefuse``: uvicorn + httptools with timefuse's bounded protocol (what the CLI runs);
- ``uvicorn-httptools``: uvicorn + httptools as configured before the limits existed;
- ``uvicorn-h11``: uvicorn + h11 with its own limits (``h11_max_incomplete_event_size``,
  ``limit_concurrency``, ``timeout_keep_alive``);
- ``granian``: granian's embedded server (``pip install granian``) with its limits
  (``header_read_timeout``, ``max_buffer_size``, ``backpressure``).

    timefuse bench http-server speed [--runs 3] [--duration 10] [VARIANT ...]
    timefuse bench http-server limits [VARIANT ...]
    timefuse bench http-server protocol [--app api|tiny]

``speed`` drives each variant with wrk (Debian package ``wrk``), the server pinned to CPU 0 and
wrk to CPU 1: a single-event POST and a GET by id over keep-alive connections, and the GET with
a new connection per request. It prints the median requests/s of the runs and the ratio to
``uvicorn-httptools``. ``limits`` runs the probes of the hostile-client list against each variant
with 2 s header, body and keep-alive limits and prints what each one did.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

VARIANTS = ("timefuse", "uvicorn-httptools", "uvicorn-h11", "granian")
BASELINE = "uvicorn-httptools"
LIMIT_SECONDS = "2"
KEY = "tfk_bench_http_server"

POST_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"external_job_id":"wrk-' .. counter .. '-' .. math.random(1000000000) ..
    '","source":"bench","scheduled_at":"2030-01-01T00:00:00Z","delivery_type":"http",' ..
    '"destination":"https://example.com/hook","payload":{"n":' .. counter .. '}}'
  return wrk.format("POST", "/api/v1/events", {["content-type"]="application/json"}, body)
end
"""


# --- the server (runs in the subprocess) --------------------------------------------------------


def serve(variant: str, port: int) -> None:
    from timefuse.config import Settings
    from timefuse.entrypoints.loops import install_uvloop

    install_uvloop()
    asyncio.run(_serve(variant, port, Settings.from_env()))


async def _serve(variant: str, port: int, settings: object) -> None:
    import uvicorn

    from timefuse.config import Settings
    from timefuse.entrypoints.api.app import create_app
    from timefuse.entrypoints.bootstrap import bootstrap
    from timefuse.entrypoints.http_connections import connection_cap
    from timefuse.entrypoints.runner import bind, readiness, server_config
    from timefuse.plugins.http_settings import HttpSettings

    assert isinstance(settings, Settings)
    tf = bootstrap(settings)
    await tf.open()
    app = create_app(
        service=tf.service,
        metrics=tf.metrics,
        settings=settings.api,
        http_settings=tf.plugins.section(HttpSettings),
        readiness=lambda: readiness(tf),
        admin=tf.admin,
    )
    cap = connection_cap(settings.server.max_connections)
    common: dict[str, Any] = {
        "ws": "none",
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
    }
    try:
        if variant == "granian":
            await _serve_granian(app, port, settings, cap)
            return
        if variant == "timefuse":
            config = server_config(app, settings.server, tf.metrics.registry)
        elif variant == "uvicorn-httptools":
            config = uvicorn.Config(app, http="httptools", lifespan="off", **common)
        else:
            config = uvicorn.Config(
                app,
                http="h11",
                lifespan="off",
                h11_max_incomplete_event_size=settings.server.max_header_bytes,
                limit_concurrency=cap,
                timeout_keep_alive=settings.server.keepalive_seconds,
                **common,
            )
        # uvicorn's own signal handling stops it on SIGTERM.
        await uvicorn.Server(config).serve(sockets=[bind("127.0.0.1", port)])
    finally:
        await tf.close()


async def _serve_granian(app: object, port: int, settings: object, cap: int) -> None:
    # granian is optional: `pip install granian` to measure it.
    from granian.constants import HTTPModes, Interfaces  # type: ignore[import-not-found]
    from granian.http import HTTP1Settings  # type: ignore[import-not-found]
    from granian.server.embed import Server  # type: ignore[import-not-found]

    from timefuse.config import Settings

    assert isinstance(settings, Settings)
    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGINL,
        http=HTTPModes.http1,
        backpressure=cap,
        backlog=2048,  # uvicorn's
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.server.header_timeout * 1000),
            keep_alive=True,
            max_buffer_size=settings.server.max_header_bytes,
        ),
        log_level="warning",
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


# --- driving it ---------------------------------------------------------------------------------


class Served:
    """One variant in a subprocess on a fresh SQLite file."""

    def __init__(
        self, variant: str, env: dict[str, str] | None = None, open_files: int | None = None
    ) -> None:
        self.variant = variant
        self.port = _free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="timefuse-http-bench-")
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.dir.name}/t.db",
            "TIMEFUSE_LOG_FORMAT": "json",
            "TIMEFUSE_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.open_files = open_files
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        command = [sys.executable, "-m", __name__, "_serve", self.variant, str(self.port)]
        pin = ["taskset", "-c", "0"] if _pinned() else []
        log = open(Path(self.dir.name) / "server.log", "wb")
        self.proc = subprocess.Popen(
            [*pin, *command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit_files if self.open_files else None,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.variant} exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise SystemExit(f"{self.variant} did not start:\n{self.log()}")

    def _limit_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()

    def log(self) -> str:
        return (Path(self.dir.name) / "server.log").read_text(errors="replace")[-3000:]

    def rss_mb(self) -> float:
        assert self.proc is not None
        pid = self._server_pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _server_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs the server in place

    def cpu_seconds(self) -> float:
        """User and system time of the server process, every thread included."""
        fields = Path(f"/proc/{self._server_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pinned() -> bool:
    return (os.cpu_count() or 1) >= 2 and _has("taskset") and not os.environ.get("NO_PIN")


def _has(program: str) -> bool:
    return any(Path(d, program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- speed --------------------------------------------------------------------------------------


def wrk(served: Served, url: str, duration: int, connections: int, args: list[str]) -> Figures:
    """Requests/s, and the server's CPU time per request (steadier on a shared machine)."""
    pin = ["taskset", "-c", "1"] if _pinned() else []
    command = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", *args, url]
    cpu_before = served.cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = served.cpu_seconds() - cpu_before
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error answers:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    assert rate is not None, out
    assert done is not None, out
    return Figures(float(rate.group(1)), cpu / int(done.group(1)) * 1e6)


class Figures(NamedTuple):
    rate: float  # requests/s
    cpu_us: float  # server CPU per request, µs


WORKLOADS = {"post": "POST event", "get": "GET by id", "get_new": "GET, new connection"}


def speed_once(variant: str, duration: int, connections: int) -> dict[str, Figures]:
    with Served(variant) as served, tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(POST_LUA)
        lua.flush()
        event_id = _submit_one(served.url)
        by_id = f"{served.url}/api/v1/events/{event_id}"
        wrk(served, served.url, 2, connections, ["-s", lua.name])  # warm-up
        close = ["-H", "Connection: close"]
        return {
            "post": wrk(served, served.url, duration, connections, ["-s", lua.name]),
            "get": wrk(served, by_id, duration, connections, []),
            "get_new": wrk(served, by_id, duration, connections, close),
        }


def _submit_one(url: str) -> str:
    body = {
        "external_job_id": "probe",
        "source": "bench",
        "scheduled_at": "2030-01-01T00:00:00Z",
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": {},
    }
    request = urllib.request.Request(
        f"{url}/api/v1/events",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.load(answer)["data"]["id"])


def speed(variants: list[str], runs: int, duration: int, connections: int) -> None:
    results: dict[str, list[dict[str, Figures]]] = {v: [] for v in variants}
    for run in range(runs):  # interleaved, so drift on a shared machine hits every variant
        for variant in variants:
            figures = speed_once(variant, duration, connections)
            results[variant].append(figures)
            shown = {k: f"{f.rate:,.0f}/s {f.cpu_us:,.0f} us" for k, f in figures.items()}
            print(f"run {run + 1} {variant}: {shown}", file=sys.stderr, flush=True)
    print(f"median of {runs} runs of {duration} s, wrk -t1 -c{connections}; ", end="")
    print(f"(ratio to {BASELINE}); server CPU per request")
    header = "".join(f"{title:>26}" for title in WORKLOADS.values())
    print(f"{'variant':<20}{header}")
    base = results.get(BASELINE)
    for variant, rows in results.items():
        cells = []
        for key in WORKLOADS:
            rate = statistics.median(r[key].rate for r in rows)
            cpu = statistics.median(r[key].cpu_us for r in rows)
            ratio = rate / statistics.median(r[key].rate for r in base) if base else 1.0
            cells.append(f"{rate:,.0f}/s ({ratio:.2f}) {cpu:,.0f} us".rjust(26))
        print(f"{variant:<20}{''.join(cells)}")


# --- the protocol alone -------------------------------------------------------------------------


class _Transport(asyncio.Transport):
    """Takes what the protocol writes; answers what uvicorn asks of a transport."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).endswith((b"}", b"0\r\n\r\n")):
            self.answers += 1

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default


async def _tiny_app(scope: dict[str, object], receive: object, send: Callable[..., object]) -> None:
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[misc]
    await send({"type": "http.response.body", "body": body})  # type: ignore[misc]


GET_REQUEST = b"GET %s HTTP/1.1\r\nHost: a\r\nUser-Agent: bench\r\n\r\n"


async def _through_protocol(
    cls: type[asyncio.Protocol],
    app: object,
    requests: list[bytes],
    new_connection: bool,
) -> float:
    """Microseconds of CPU time per request through ``cls`` and ``app``, no sockets."""
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, http=cls, ws="none", lifespan="off", log_config=None)  # type: ignore[arg-type]
    config.load()
    state = ServerState()
    protocol: Any = None
    transport = _Transport()
    started = time.process_time()  # CPU time: what other processes take doesn't count
    for n, request in enumerate(requests):
        if protocol is None or new_connection:
            if protocol is not None:
                protocol.connection_lost(None)
            transport = _Transport()
            protocol = cls(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
            protocol.connection_made(transport)
        protocol.data_received(request)
        while transport.answers <= (0 if new_connection else n):
            await asyncio.sleep(0)
    if protocol is not None:
        protocol.connection_lost(None)
    return (time.process_time() - started) / len(requests) * 1e6


async def _protocol_rounds(use_api: bool, rounds: int, requests: int) -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from timefuse.config import Settings
    from timefuse.entrypoints.api.app import create_app
    from timefuse.entrypoints.bootstrap import bootstrap
    from timefuse.entrypoints.http_connections import Connections, ServerLimits
    from timefuse.entrypoints.http_protocol import bounded_protocol

    bounded = bounded_protocol(ServerLimits(1000, 10.0, 32768, 30.0, 5), Connections(1000))
    classes: dict[str, type[asyncio.Protocol]] = {"plain": HttpToolsProtocol, "bounded": bounded}
    with tempfile.TemporaryDirectory() as tmp:
        app: object = _tiny_app
        tf = None
        if use_api:
            settings = Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp}/t.db"})
            tf = bootstrap(settings)
            await tf.open()
            app = create_app(service=tf.service, metrics=tf.metrics, settings=settings.api)
        try:
            await _report_rounds(classes, app, use_api, rounds, requests)
        finally:
            if tf is not None:
                await tf.close()


async def _report_rounds(
    classes: dict[str, type[asyncio.Protocol]],
    app: object,
    use_api: bool,
    rounds: int,
    requests: int,
) -> None:
    path = b"/api/v1/events/statistics" if use_api else b"/x"
    workloads: dict[str, tuple[Callable[[int], bytes], bool]] = {
        "GET, keep-alive": (lambda n: GET_REQUEST % path, False),
        "GET, new connection per request": (lambda n: GET_REQUEST % path, True),
    }
    for name, (make, new_connection) in workloads.items():
        times: dict[str, list[float]] = {"plain": [], "bounded": []}
        for round_ in range(rounds):
            order = list(classes) if round_ % 2 == 0 else list(reversed(classes))
            for variant in order:  # alternated, so drift hits both alike
                batch = [make(n) for n in range(requests)]
                times[variant].append(
                    await _through_protocol(classes[variant], app, batch, new_connection)
                )
        plain = statistics.median(times["plain"])
        bounded = statistics.median(times["bounded"])
        paired = statistics.median(
            b / p for p, b in zip(times["plain"], times["bounded"], strict=True)
        )
        print(
            f"  {name:<34} plain {plain:7.1f} us, bounded {bounded:7.1f} us: "
            f"{bounded - plain:+5.1f} us (paired ratio {paired:.3f})"
        )


def protocol_cost(use_api: bool, rounds: int, requests: int) -> None:
    from timefuse.entrypoints.loops import install_uvloop

    install_uvloop()
    app = "the API (SQLite store)" if use_api else "a tiny ASGI app"
    print(f"uvicorn's httptools protocol, plain and with timefuse's limits, serving {app}:")
    print(f"{rounds} alternated rounds of {requests:,} requests; CPU time per request, medians")
    asyncio.run(_protocol_rounds(use_api, rounds, requests))


# --- limits -------------------------------------------------------------------------------------

LIMITS_ENV = {
    "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": LIMIT_SECONDS,
    "TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS": LIMIT_SECONDS,
    "TIMEFUSE_SERVER_KEEPALIVE_SECONDS": LIMIT_SECONDS,
}
HORIZON = 8.0  # how long a probe waits before it calls a connection "still open"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=HORIZON)


def _outcome(sock: socket.socket, started: float) -> str:
    """What the server did with ``sock``: its status line, and when it closed."""
    data = b""
    sock.settimeout(max(0.1, HORIZON - (time.monotonic() - started)))
    try:
        while chunk := sock.recv(65536):
            data += chunk
        end = "closed"
    except TimeoutError:
        end = "still open"
    except ConnectionResetError:
        end = "reset"
    took = time.monotonic() - started
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    status = status.removeprefix("HTTP/1.1 ") or "no answer"
    when = f"after {took:.1f} s" if end != "still open" else f"at {HORIZON:g} s"
    return f"{status}, {end} {when}"


def probe_idle(port: int) -> str:
    sock = _connect(port)
    return _outcome(sock, time.monotonic())


def probe_half_headers(port: int) -> str:
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    return _outcome(sock, started)


def probe_drip(port: int) -> str:
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n{"
    )
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.5):
            try:
                sock.send(b" ")
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        return _outcome(sock, started)
    finally:
        stop.set()


def probe_big_header(port: int, header: bytes) -> str:
    sock = _connect(port)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    except OSError as exc:
        return f"send failed: {exc.strerror}"
    return _outcome(sock, started)


def probe_unfinished_headers(served: Served, connections: int = 4, mib: int = 40) -> str:
    before = served.rss_mb()
    peak = before
    stop = threading.Event()
    socks = [_connect(served.port) for _ in range(connections)]

    def send(sock: socket.socket) -> None:
        chunk = b"a" * (1 << 20)
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nx-unfinished: ")
            for _ in range(mib):
                sock.sendall(chunk)
        except OSError:
            pass

    senders = [threading.Thread(target=send, args=(s,), daemon=True) for s in socks]
    for sender in senders:
        sender.start()
    while any(s.is_alive() for s in senders) and not stop.is_set():
        peak = max(peak, served.rss_mb())
        time.sleep(0.05)
    peak = max(peak, served.rss_mb())
    for sock in socks:
        sock.close()
    return f"RSS {before:.0f} MB -> peak {peak:.0f} MB"


def probe_urllib_413(port: int) -> str:
    body = b"x" * (33 * 1024 * 1024)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/events",
        data=body,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return f"{answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} (answer read)"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer: {reason}"


def probe_fd_exhaustion(variant: str) -> str:
    """300 idle connections against a server with 256 descriptors, then a keyed request."""
    from timefuse.entrypoints.auth import hash_key

    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.toml"
        keys.write_text(
            f'[[keys]]\nname = "bench"\nsha256 = "{hash_key(KEY)}"\nsources = ["bench"]\n'
            'roles = ["read"]\n'
        )
        env = {**LIMITS_ENV, "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": "60"}
        env["TIMEFUSE_API_KEYS_FILE"] = str(keys)
        with Served(variant, env, open_files=256) as served:
            idle, refused = [], 0
            for _ in range(300):
                try:
                    idle.append(socket.create_connection(("127.0.0.1", served.port), timeout=2))
                except OSError:
                    refused += 1
            time.sleep(0.5)
            request = urllib.request.Request(
                f"{served.url}/api/v1/events/statistics",
                headers={"authorization": f"Bearer {KEY}"},
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    result = f"{answer.status} after {time.monotonic() - started:.2f} s"
            except urllib.error.HTTPError as exc:
                result = f"{exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                result = f"failed: {getattr(exc, 'reason', exc)}"
            for sock in idle:
                sock.close()
            return result + (f" ({refused} of the 300 could not connect)" if refused else "")


PROBES: list[tuple[str, Callable[[Served], str]]] = [
    ("idle connection, nothing sent", lambda s: probe_idle(s.port)),
    ("half the headers, then nothing", lambda s: probe_half_headers(s.port)),
    ("body at 1 byte per 0.5 s", lambda s: probe_drip(s.port)),
    ("1 MiB header", lambda s: probe_big_header(s.port, b"x-big: " + b"a" * (1 << 20) + b"\r\n")),
    ("200,000 header lines", lambda s: probe_big_header(s.port, b"a: b\r\n" * 200_000)),
    ("4 x 40 MiB unfinished header", probe_unfinished_headers),
    ("urllib, 33 MB body", lambda s: probe_urllib_413(s.port)),
]


def limits(variants: list[str]) -> None:
    print(f"limits set to {LIMIT_SECONDS} s (header, body, keep-alive); probes wait {HORIZON:g} s")
    for variant in variants:
        print(f"\n{variant}")
        with Served(variant, LIMITS_ENV) as served:
            for name, probe in PROBES:
                print(f"  {name:<34} {probe(served)}", flush=True)
        print(f"  {'300 idle, 256 fds, keyed request':<34} {probe_fd_exhaustion(variant)}")


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """``timefuse bench http-server ...`` with the arguments after ``http-server``."""
    if argv[:1] == ["_serve"]:
        serve(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="timefuse bench http-server", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    speed_args = sub.add_parser("speed", help="requests/s with wrk")
    speed_args.add_argument("--runs", type=int, default=3)
    speed_args.add_argument("--duration", type=int, default=10)
    speed_args.add_argument("--connections", type=int, default=32)
    speed_args.add_argument("variants", nargs="*", metavar="VARIANT")
    limits_args = sub.add_parser("limits", help="what each server does with hostile clients")
    limits_args.add_argument("variants", nargs="*", metavar="VARIANT")
    protocol_args = sub.add_parser("protocol", help="the limits' cost in the protocol alone")
    protocol_args.add_argument("--rounds", type=int, default=10)
    protocol_args.add_argument("--requests", type=int, default=5_000)
    protocol_args.add_argument("--app", choices=("tiny", "api"), default="api")
    args = parser.parse_args(argv)
    if args.command == "protocol":
        protocol_cost(args.app == "api", args.rounds, args.requests)
        return 0
    variants = list(args.variants) or [v for v in VARIANTS if _installed(v)]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.command == "speed":
        if not _has("wrk"):
            print("timefuse bench http-server: speed needs wrk (apt-get install wrk)")
            return 2
        speed(variants, args.runs, args.duration, args.connections)
    else:
        limits(variants)
    return 0


def _installed(variant: str) -> bool:
    return variant != "granian" or importlib.util.find_spec("granian") is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
