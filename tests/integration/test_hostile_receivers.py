"""The http delivery type against receivers that answer badly, slowly or not at all.

A receiver is untrusted input. Whatever it sends, an attempt ends in a defined outcome, never
an exception; and once a receiver's status line says 2xx, nothing after it (headers, body,
the connection) turns the delivery into a failure.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.raw_receiver import Answer, RawReceiver, Script, self_signed_tls
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.plugins.http import HttpDelivery
from timefuse.plugins.http_settings import HttpSettings
from timefuse.testing.factories import make_event

TIMEOUT_SECONDS = 2.0
ENV = {
    "TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8",
    "TIMEFUSE_HTTP_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
    "TIMEFUSE_HTTP_CONNECT_TIMEOUT_SECONDS": "1",
}
WEEK = 7 * 86400.0

SUCCESS, RETRIABLE, PERMANENT = OutcomeKind.SUCCESS, OutcomeKind.RETRIABLE, OutcomeKind.PERMANENT


@dataclass(frozen=True)
class Expected:
    kind: OutcomeKind
    status: int | None
    reason: str | None = None  # a fragment of the recorded error; None: no error
    retry_after: float | None = None

    def check(self, outcome: DeliveryOutcome) -> None:
        assert (outcome.kind, outcome.status_code) == (self.kind, self.status), outcome
        if self.reason is None:
            assert outcome.error is None or outcome.error == f"HTTP {self.status}", outcome
        else:
            assert self.reason in (outcome.error or ""), outcome
            assert len(outcome.error or "") <= 250, "reasons are short"
        assert outcome.retry_after == self.retry_after, outcome


# -- scripts: what a receiver sends back -----------------------------------------------------


def head(status: str = "200 OK", *headers: str, length: int | None = 0) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def sends(*parts: bytes, then: str = "close", pause: float = 0.0) -> Script:
    """Each part in turn (``pause`` seconds apart), then close, reset, or hold until left."""

    async def script(answer: Answer) -> None:
        for index, part in enumerate(parts):
            if index and pause:
                await asyncio.sleep(pause)
            await answer.send(part)
        if then == "reset":
            answer.reset()
        elif then == "hold":
            await asyncio.sleep(60)  # until the client gives up and the test stops us

    return script


def endless(start: bytes, chunk: bytes = b"x" * 65536) -> Script:
    async def script(answer: Answer) -> None:
        await answer.send(start)
        while True:
            await answer.send(chunk)

    return script


def drips(start: bytes, *, every: float = 0.05, count: int = 2000) -> Script:
    async def script(answer: Answer) -> None:
        await answer.send(start)
        for _ in range(count):
            await asyncio.sleep(every)
            await answer.send(b"x")

    return script


def silent() -> Script:
    async def script(answer: Answer) -> None:
        await asyncio.sleep(60)

    return script


def many_headers(n: int) -> tuple[str, ...]:
    return tuple(f"X-Header-{i}: {i}" for i in range(n))


BIG = "X-Big: " + "a" * (100 * 1024)
CHUNKED = "Transfer-Encoding: chunked"

# -- the table -------------------------------------------------------------------------------

CASES: list[tuple[str, Script, Expected]] = [
    # Retry-After is the receiver's to garble: on a 2xx it is never even looked at.
    *[
        (
            f"200 Retry-After {value[:12]!r}",
            sends(head("200 OK", f"Retry-After: {value}")),
            Expected(SUCCESS, 200),
        )
        for value in ("²", "①", "-1", "1.5", "9" * 5000, "Thu, 01 Jan 99999 00:00:00 GMT", "")
    ],
    (
        "204 Retry-After ①",
        sends(head("204 No Content", "Retry-After: ①", length=None)),
        Expected(SUCCESS, 204),
    ),
    # On a retriable answer a good Retry-After is honoured, any other is ignored.
    (
        "503 Retry-After 120",
        sends(head("503 Busy", "Retry-After: 120")),
        Expected(RETRIABLE, 503, "HTTP 503", 120.0),
    ),
    (
        "503 Retry-After ²",
        sends(head("503 Busy", "Retry-After: ²")),
        Expected(RETRIABLE, 503, "HTTP 503"),
    ),
    (
        "429 Retry-After huge",
        sends(head("429 Slow down", "Retry-After: " + "9" * 5000)),
        Expected(RETRIABLE, 429, "HTTP 429", WEEK),
    ),
    (
        "429 Retry-After past date",
        sends(head("429 Slow down", "Retry-After: Thu, 01 Jan 1970 00:00:00 GMT")),
        Expected(RETRIABLE, 429, "HTTP 429", 0.0),
    ),
    (
        "503 Retry-After year 99999",
        sends(head("503 Busy", "Retry-After: Thu, 01 Jan 99999 00:00:00 GMT")),
        Expected(RETRIABLE, 503, "HTTP 503"),
    ),
    # Heads too large to read: the status line is still the answer.
    ("200 with a 100 KiB header line", sends(head("200 OK", BIG)), Expected(SUCCESS, 200)),
    (
        "200 with 10,000 headers",
        sends(head("200 OK", *many_headers(10_000))),
        Expected(SUCCESS, 200),
    ),
    (
        "503 with 10,000 headers",
        sends(head("503 Busy", *many_headers(10_000))),
        Expected(RETRIABLE, 503, "HTTP 503"),
    ),
    ("200 with a NUL in a header", sends(head("200 OK", "X-Odd: a\x00b")), Expected(SUCCESS, 200)),
    (
        "200 with two Content-Lengths",
        sends(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        Expected(SUCCESS, 200),
    ),
    (
        "200 with lone LF line ends",
        sends(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
        Expected(SUCCESS, 200),
    ),
    # No status line to read.
    (
        "invalid status code",
        sends(b"HTTP/1.1 abc OK\r\n\r\n"),
        Expected(RETRIABLE, None, "bad response: Bad status line"),
    ),
    (
        "two-digit status code",
        sends(b"HTTP/1.1 42 Odd\r\nContent-Length: 0\r\n\r\n"),
        Expected(RETRIABLE, None, "bad response: Bad status line"),
    ),
    (
        "not HTTP at all",
        sends(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        Expected(RETRIABLE, None, "bad response: Bad status line"),
    ),
    (
        "status line cut short, then reset",
        sends(b"HTTP/1.1 20", then="reset"),
        Expected(RETRIABLE, None, "connection failed"),
    ),
    # Odd but readable answers.
    (
        "HTTP/1.0 without a length",
        sends(b"HTTP/1.0 200 OK\r\n\r\nbody until close"),
        Expected(SUCCESS, 200),
    ),
    (
        "100 Continue, then 200",
        sends(b"HTTP/1.1 100 Continue\r\n\r\n", head("200 OK")),
        Expected(SUCCESS, 200),
    ),
    (
        "100 and 103 in one packet, then 201",
        sends(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + head("201 Created")
        ),
        Expected(SUCCESS, 201),
    ),
    (
        "1xx only, then close",
        sends(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
        Expected(RETRIABLE, None, "connection failed: ServerDisconnectedError"),
    ),
    (
        "101 Switching Protocols",
        sends(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
        Expected(PERMANENT, 101, "HTTP 101"),
    ),
    ("status 999", sends(head("999 Whatever")), Expected(PERMANENT, 999, "HTTP 999")),
    # Redirects, loops included, are answers, never followed.
    *[
        (
            f"{code} to itself",
            sends(head(f"{code} Moved", "Location: /hook")),
            Expected(PERMANENT, code, "redirects are not followed"),
        )
        for code in (301, 302, 307, 308)
    ],
    # Bodies: never read past DISCARD_BODY_LIMIT or DISCARD_BODY_SECONDS, never a failure.
    ("200 with an endless body", endless(head("200 OK", length=None)), Expected(SUCCESS, 200)),
    (
        "200 with an endless chunked body",
        endless(head("200 OK", CHUNKED, length=None), b"10000\r\n" + b"x" * 65536 + b"\r\n"),
        Expected(SUCCESS, 200),
    ),
    ("200 with a dripping body", drips(head("200 OK", length=2000)), Expected(SUCCESS, 200)),
    (
        "500 with a dripping body",
        drips(head("500 Oops", length=2000)),
        Expected(RETRIABLE, 500, "HTTP 500"),
    ),
    (
        "200 with bad chunking",
        sends(head("200 OK", CHUNKED, length=None) + b"zz\r\nabc\r\n"),
        Expected(SUCCESS, 200),
    ),
    (
        "200, bad chunking a moment later",
        sends(head("200 OK", CHUNKED, length=None), b"zz\r\nabc\r\n", pause=0.05),
        Expected(SUCCESS, 200),
    ),
    (
        "500 with bad chunking",
        sends(head("500 Oops", CHUNKED, length=None) + b"zz\r\n"),
        Expected(RETRIABLE, 500, "HTTP 500"),
    ),
    (
        "200 with a short body",
        sends(head("200 OK", length=100) + b"only ten b"),
        Expected(SUCCESS, 200),
    ),
    # Connections that break.
    (
        "reset before the status line",
        sends(then="reset"),
        Expected(RETRIABLE, None, "connection failed"),
    ),
    (
        "closed before the status line",
        sends(),
        Expected(RETRIABLE, None, "connection failed: ServerDisconnectedError"),
    ),
    (
        "reset after a 200 status line",
        sends(b"HTTP/1.1 200 OK\r\n", then="reset"),
        Expected(SUCCESS, 200),
    ),
    (
        "reset after a 503 status line",
        sends(b"HTTP/1.1 503 Busy\r\n", then="reset"),
        Expected(RETRIABLE, 503, "HTTP 503"),
    ),
    (
        "reset in the middle of a 200's body",
        sends(head("200 OK", length=1000) + b"partial", then="reset"),
        Expected(SUCCESS, 200),
    ),
    ("no answer at all", silent(), Expected(RETRIABLE, None, "timeout")),
    (
        "a head that drips past the timeout",
        drips(b"HTTP/1.1 200 OK\r\n", every=0.1, count=100),
        Expected(RETRIABLE, None, "timeout"),
    ),
]


@asynccontextmanager
async def receiving(
    script: Script, *, tls: ssl.SSLContext | None = None, reads_request: bool = True
) -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver(script, tls=tls, reads_request=reads_request)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def deliver(url: str, env: dict[str, str] | None = None) -> DeliveryOutcome:
    delivery = HttpDelivery(HttpSettings.from_env({**ENV, **(env or {})}))
    await delivery.start()
    try:
        # Bounded here too: a delivery that hangs must fail this test, not stall the suite.
        return await asyncio.wait_for(delivery.deliver(make_event(destination=url), 1), 15)
    finally:
        await delivery.stop()


@pytest.mark.parametrize(
    ("script", "expected"), [pytest.param(s, e, id=name) for name, s, e in CASES]
)
async def test_each_hostile_answer_ends_in_its_defined_outcome(
    script: Script, expected: Expected
) -> None:
    async with receiving(script) as receiver:
        outcome = await deliver(receiver.url())
        assert len(receiver.requests) == 1, "one attempt is one request, redirects unfollowed"
    expected.check(outcome)


async def test_a_204_with_a_garbled_retry_after_is_delivered_once() -> None:
    async with receiving(sends(head("204 No Content", "Retry-After: ①", length=None))) as r:
        outcome = await deliver(r.url())
        assert outcome.succeeded
        assert len(r.requests) == 1


async def test_an_endless_body_is_not_read_past_the_discard_limit() -> None:
    async with receiving(endless(head("200 OK", length=None))) as receiver:
        outcome = await deliver(receiver.url())
        await asyncio.wait_for(receiver.client_left.wait(), 5)
    assert outcome.succeeded
    # What the receiver managed to write is what socket buffers took, not an endless stream.
    assert receiver.written[0] < 64 * 1024 * 1024


async def test_a_dripping_body_is_abandoned_well_before_it_ends() -> None:
    script = drips(head("200 OK", length=2000), every=0.05, count=2000)  # 100 s of drip
    async with receiving(script) as receiver:
        outcome = await deliver(receiver.url(), {"TIMEFUSE_HTTP_TIMEOUT_SECONDS": "30"})
        await asyncio.wait_for(receiver.client_left.wait(), 5)
    assert outcome.succeeded
    assert receiver.written[0] < len(head("200 OK", length=2000)) + 2000, "read to the end"


# -- TLS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("expired", [False, True], ids=["self-signed", "expired"])
async def test_an_untrusted_certificate_is_a_retriable_tls_failure(
    tmp_path: Path, expired: bool
) -> None:
    tls = self_signed_tls(tmp_path, expired=expired)
    async with receiving(sends(head("200 OK")), tls=tls) as receiver:
        outcome = await deliver(receiver.url())
        assert receiver.requests == [], "nothing was sent over an unverified connection"
    Expected(RETRIABLE, None, "TLS certificate rejected").check(outcome)
    assert "certificate verify failed" in (outcome.error or "")


async def test_a_receiver_that_does_not_speak_tls_is_a_retriable_handshake_failure() -> None:
    # The receiver greets a TLS ClientHello with plain HTTP.
    async with receiving(sends(head("200 OK")), reads_request=False) as receiver:
        outcome = await deliver(receiver.url().replace("http://", "https://"))
    Expected(RETRIABLE, None, "TLS handshake failed").check(outcome)


async def test_a_tls_receiver_spoken_to_in_plain_http_is_a_retriable_failure(
    tmp_path: Path,
) -> None:
    tls = self_signed_tls(tmp_path)
    async with receiving(sends(head("200 OK")), tls=tls) as receiver:
        outcome = await deliver(receiver.url().replace("https://", "http://"))
    assert (outcome.kind, outcome.status_code) == (RETRIABLE, None), outcome
    assert outcome.error is not None
    assert outcome.error.startswith(("connection failed", "bad response")), outcome


# -- any bytes at all ------------------------------------------------------------------------

STATUS_LINES = st.builds(
    lambda code, reason: f"HTTP/1.1 {code} {reason}\r\n".encode(),
    st.integers(100, 599),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status_line=st.none() | STATUS_LINES, rest=st.binary(max_size=2000), reset=st.booleans())
def test_any_answer_is_an_outcome_and_a_2xx_status_line_is_a_success(
    status_line: bytes | None, rest: bytes, reset: bool
) -> None:
    answer = (status_line or b"") + rest

    async def attempt() -> DeliveryOutcome:
        script = sends(answer, then="reset" if reset else "close") if answer else sends()
        async with receiving(script) as receiver:
            return await deliver(receiver.url())

    outcome = asyncio.run(attempt())
    assert isinstance(outcome, DeliveryOutcome)
    if status_line is not None:
        code = int(status_line.split()[1])
        if 200 <= code < 300:
            assert (outcome.kind, outcome.status_code) == (SUCCESS, code), (answer[:80], outcome)
        if outcome.status_code is not None and not 100 <= code < 200:
            assert outcome.status_code == code
