"""Slow, idle and hostile clients against a real `timefuse serve`, before authentication.

Each test sets the listener's limits short through the settings, so a deadline passes in well
under a second; the sockets' own timeouts only bound how long a broken server could hang.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_auth_serve import KEY, keys_file
from tests.support.process import TimefuseProcess, free_port

Start = Callable[..., TimefuseProcess]

# Long enough that a server without the guard is still holding the connection when the
# test gives up; the guards below act within a fraction of it.
GIVE_UP_SECONDS = 10.0
SHORT = "0.5"


@dataclass
class Answer:
    raw: bytes
    closed: bool
    seconds: float

    @property
    def statuses(self) -> list[int]:
        return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.raw)]

    @property
    def status(self) -> int | None:
        return self.statuses[0] if self.statuses else None

    @property
    def error_code(self) -> str:
        body = self.raw.partition(b"\r\n\r\n")[2]
        return str(json.loads(body)["error_code"])


Dial = Callable[[int], socket.socket]


@pytest.fixture
def dial() -> Iterator[Dial]:
    """Opens client sockets to a port; every one is closed at the end."""
    opened: list[socket.socket] = []

    def connect(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_SECONDS)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def read_to_end(sock: socket.socket, started: float) -> Answer:
    """Everything the server sends until it closes (or until the test gives up)."""
    data = b""
    closed = True
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        pass  # closed too, but what the reset destroyed is missing from ``data``
    return Answer(data, closed, time.monotonic() - started)


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    dial: Dial, timefuse: Start
) -> None:
    tf = timefuse({"TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": SHORT})
    sock = dial(tf.port)
    started = time.monotonic()

    answer = read_to_end(sock, started)

    assert answer.closed
    assert answer.status is None  # no request, nothing to answer
    assert answer.seconds >= 0.4  # it waited for the timeout, not less


def test_headers_that_stop_halfway_get_408_at_the_header_timeout(
    dial: Dial, timefuse: Start
) -> None:
    tf = timefuse({"TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": SHORT})
    sock = dial(tf.port)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    answer = read_to_end(sock, started)

    assert answer.closed
    assert answer.status == 408
    assert answer.error_code == "REQUEST_TIMEOUT"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"x-big: " + b"a" * (1 << 20) + b"\r\n", id="one 1 MiB header"),
        pytest.param(b"a: b\r\n" * 200_000, id="200,000 header lines"),
        pytest.param(b"x-big: " + b"a" * 40_000 + b"\r\n", id="40 kB in one read"),
    ],
)
def test_headers_over_the_limit_get_431(dial: Dial, timefuse: Start, headers: bytes) -> None:
    tf = timefuse()  # the default limit, 32 KiB
    sock = dial(tf.port)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")

    answer = read_to_end(sock, started)

    assert answer.status == 431
    assert answer.error_code == "HEADERS_TOO_LARGE"
    assert answer.closed


async def test_headers_under_the_limit_are_served(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    tf = timefuse()

    response = await client.get(f"{tf.base_url}/health", headers={"x-big": "a" * 30_000})

    assert response.status_code == 200


def test_a_body_dripped_slowly_gets_408_at_the_body_timeout(dial: Dial, timefuse: Start) -> None:
    tf = timefuse({"TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS": SHORT})
    sock = dial(tf.port)
    started = time.monotonic()
    sock.sendall(
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n{"
    )
    stop = threading.Event()

    def drip() -> None:  # a byte every 100 ms: the connection never goes quiet
        while not stop.wait(0.1):
            try:
                sock.send(b" ")
            except OSError:
                return

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        answer = read_to_end(sock, started)
    finally:
        stop.set()
        dripping.join()

    assert answer.status == 408
    assert answer.error_code == "REQUEST_TIMEOUT"
    assert answer.closed


def test_a_body_sent_in_pieces_within_the_timeouts_is_accepted(dial: Dial, timefuse: Start) -> None:
    tf = timefuse(
        {"TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS": "3", "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": "3"}
    )
    body = json.dumps(
        {
            "external_job_id": "in-pieces",
            "source": "e2e",
            "scheduled_at": "2030-01-01T00:00:00Z",
            "delivery_type": "http",
            "destination": "https://example.com/hook",
            "payload": {"n": 1},
        }
    ).encode()
    sock = dial(tf.port)
    request = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    for start in range(0, len(request), 40):  # headers and body in pieces, 40 bytes each
        sock.sendall(request[start : start + 40])
        time.sleep(0.01)
    # The next request on the same connection, and one after it in the same write.
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")

    answer = read_to_end(sock, time.monotonic())

    assert answer.statuses == [202, 200, 200, 200]
    assert answer.closed


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_time(
    dial: Dial,
    timefuse: Start,
) -> None:
    tf = timefuse({"TIMEFUSE_SERVER_KEEPALIVE_SECONDS": "1"})
    sock = dial(tf.port)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")

    answer = read_to_end(sock, started)

    assert answer.status == 200
    assert answer.closed
    # The setting (1 s) rather than uvicorn's default (5 s).
    assert 0.9 <= answer.seconds < 4


def test_urllib_reads_the_413_of_a_33_mb_body(timefuse: Start) -> None:
    tf = timefuse()  # TIMEFUSE_MAX_BODY_BYTES: 10 MiB
    request = urllib.request.Request(
        f"{tf.base_url}/api/v1/events",
        data=b"x" * (33 * 1024 * 1024),
        headers={"content-type": "application/json"},  # urllib adds "Connection: close"
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=GIVE_UP_SECONDS)

    with refused.value as answer:
        assert answer.code == 413
        assert json.loads(answer.read())["error_code"] == "PAYLOAD_TOO_LARGE"


@contextmanager
def open_file_limit(limit: int) -> Iterator[None]:
    """Processes started inside inherit this soft limit on open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_300_idle_connections_leave_room_for_a_keyed_request(
    dial: Dial, timefuse: Start, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    env = {
        "TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path)),
        "TIMEFUSE_METRICS_AUTH": "false",  # the key below may submit and read, not scrape
        # Long: the idle connections must give way to the cap, not to a timeout.
        "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": "60",
    }
    with open_file_limit(256):
        tf = timefuse(env)
    idle = [dial(tf.port) for _ in range(300)]
    answer = await client.get(
        f"{tf.base_url}/api/v1/events/statistics",
        headers={"authorization": f"Bearer {KEY}"},
        timeout=5.0,
    )
    metrics = (await client.get(f"{tf.base_url}/metrics")).text
    shed = sum(1 for sock in idle if _closed_by_server(sock))

    assert answer.status_code == 200
    # Half of 256 descriptors for clients: the oldest idle connections made room.
    assert shed >= 300 - 128
    assert 'timefuse_http_connections_limited_total{reason="shed"}' in metrics
    assert "Too many open files" not in tf.log()


def _closed_by_server(sock: socket.socket) -> bool:
    # Shed before the keyed request was accepted (accepts are in order), so the FIN is here.
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_the_metrics_listener_of_dispatch_closes_idle_connections(
    dial: Dial,
    processes: Callable[..., TimefuseProcess],
) -> None:
    port = free_port()
    tf = processes(
        {"TIMEFUSE_METRICS_PORT": str(port), "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": SHORT},
        command="dispatch",
    )
    _wait_for_health(tf, f"http://127.0.0.1:{port}/health")
    sock = dial(port)
    started = time.monotonic()

    answer = read_to_end(sock, started)

    assert answer.closed
    assert answer.seconds >= 0.4


def _wait_for_health(tf: TimefuseProcess, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"the metrics listener did not answer:\n{tf.log()}")
