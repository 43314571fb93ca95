"""The http delivery type against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.plugins.http import HttpDelivery
from timefuse.plugins.http_settings import HttpSettings
from timefuse.testing.factories import make_event
from timefuse.webhooks import WebhookVerificationError, verify

# The receiver listens on loopback, which the SSRF guard refuses unless allowed.
LOOPBACK_ALLOWED = {"TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8"}

CURRENT_SECRET = "whsec_" + base64.b64encode(b"current signing key, 32 bytes!!").decode()
PREVIOUS_SECRET = "whsec_" + base64.b64encode(b"previous signing key, 32 bytes!!").decode()

# Raw UTF-8 and odd spacing: any re-encoding on the way out would change these bytes.
PAYLOAD = '{"order":  42, "name": "café", "tags": ["a","b"]}'.encode()


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver whose answer is picked by the path it is sent to."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    # The secret /signed checks requests against, as a real receiver would.
    secret: str = ""
    # Slow handlers wait on this, so the server can shut down without waiting them out.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/redirect/{code}", self._redirect)
        app.router.add_route("*", "/target", self._status)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("*", "/big", self._big)
        app.router.add_route("*", "/cookie", self._cookie)
        app.router.add_route("*", "/signed", self._signed)
        return app

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        self.requests.append(Received(request.method, request.path, request.headers, body))

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=int(request.match_info.get("code", "200")), headers=headers)

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"Location": self.url("/target")})

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.wait_for(self.released.wait(), timeout=10)
        return web.Response(status=200)

    async def _big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=200, body=b"x" * (1024 * 1024))

    async def _signed(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            verify(await request.read(), request.headers, self.secret)
        except WebhookVerificationError as exc:
            return web.Response(status=401, text=str(exc))
        return web.Response(status=204)

    async def _cookie(self, request: web.Request) -> web.Response:
        await self._record(request)
        response = web.Response(status=200)
        response.set_cookie("session", "from-the-receiver")
        return response


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = TestServer(receiver.app(), host="127.0.0.1")
    await server.start_server()
    receiver.base_url = str(server.make_url("")).rstrip("/")
    yield receiver
    receiver.released.set()
    await server.close()


async def started(settings: HttpSettings) -> HttpDelivery:
    delivery = HttpDelivery(settings)
    await delivery.start()
    return delivery


@pytest.fixture
async def delivery() -> AsyncIterator[HttpDelivery]:
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    yield delivery
    await delivery.stop()


def event_to(destination: str) -> Event:
    return make_event(destination=destination, payload=PAYLOAD)


@pytest.mark.parametrize("status", [200, 204])
async def test_posts_the_payload_as_is_with_webhook_headers(
    receiver: Receiver, delivery: HttpDelivery, status: int
) -> None:
    event = event_to(receiver.url(f"/status/{status}"))
    before = int(time.time())

    outcome = await delivery.deliver(event, attempt=1)

    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.status_code == status
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.body == PAYLOAD
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("timefuse/")
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert request.headers["timefuse-attempt"] == "1"
    # We throw the answer away, so we don't ask for it compressed.
    assert "accept-encoding" not in request.headers


async def test_every_attempt_carries_the_same_webhook_id(
    receiver: Receiver, delivery: HttpDelivery
) -> None:
    event = event_to(receiver.url("/status/500"))

    await delivery.deliver(event, attempt=1)
    await delivery.deliver(event, attempt=2)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.id, event.id]
    assert [r.headers["timefuse-attempt"] for r in receiver.requests] == ["1", "2"]


async def test_503_with_retry_after_is_retried_after_that_delay(
    receiver: Receiver, delivery: HttpDelivery
) -> None:
    outcome = await delivery.deliver(event_to(receiver.url("/status/503?retry_after=7")), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.status_code == 503
    assert outcome.retry_after == 7


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_throttling_and_server_errors_are_retriable(
    receiver: Receiver, delivery: HttpDelivery, status: int
) -> None:
    outcome = await delivery.deliver(event_to(receiver.url(f"/status/{status}")), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.status_code == status
    assert outcome.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_client_errors_are_permanent(
    receiver: Receiver, delivery: HttpDelivery, status: int
) -> None:
    outcome = await delivery.deliver(event_to(receiver.url(f"/status/{status}")), 1)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.status_code == status


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_permanent_and_not_followed(
    receiver: Receiver, delivery: HttpDelivery, status: int
) -> None:
    outcome = await delivery.deliver(event_to(receiver.url(f"/redirect/{status}")), 1)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.status_code == status
    assert receiver.paths == [f"/redirect/{status}"]


async def test_a_closed_port_is_retriable(delivery: HttpDelivery) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    outcome = await delivery.deliver(event_to(f"http://127.0.0.1:{closed_port}/hook"), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "connection failed" in outcome.error


async def test_a_receiver_slower_than_the_timeout_is_retriable(receiver: Receiver) -> None:
    settings = HttpSettings.from_env({**LOOPBACK_ALLOWED, "TIMEFUSE_HTTP_TIMEOUT_SECONDS": "0.3"})
    delivery = await started(settings)
    try:
        outcome = await delivery.deliver(event_to(receiver.url("/slow")), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "timeout" in outcome.error
    assert receiver.paths == ["/slow"]


async def test_a_large_response_body_is_discarded(
    receiver: Receiver, delivery: HttpDelivery
) -> None:
    outcome = await delivery.deliver(event_to(receiver.url("/big")), 1)
    again = await delivery.deliver(event_to(receiver.url("/status/200")), 1)

    assert outcome.kind is OutcomeKind.SUCCESS
    assert again.kind is OutcomeKind.SUCCESS


async def test_receiver_cookies_are_not_sent_back(
    receiver: Receiver, delivery: HttpDelivery
) -> None:
    await delivery.deliver(event_to(receiver.url("/cookie")), 1)
    await delivery.deliver(event_to(receiver.url("/status/200")), 1)

    assert "cookie" not in receiver.requests[1].headers


@pytest.mark.parametrize("destination", ["ftp://127.0.0.1/hook", "http://", "not a url"])
async def test_an_invalid_destination_is_permanent(
    receiver: Receiver, delivery: HttpDelivery, destination: str
) -> None:
    outcome = await delivery.deliver(event_to(destination), 1)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.error is not None
    assert "invalid destination" in outcome.error
    assert receiver.requests == []


async def test_delivering_before_start_or_after_stop_is_retriable(receiver: Receiver) -> None:
    delivery = HttpDelivery(HttpSettings.from_env(LOOPBACK_ALLOWED))
    event = event_to(receiver.url("/status/200"))

    before_start = await delivery.deliver(event, 1)
    await delivery.start()
    await delivery.stop()
    after_stop = await delivery.deliver(event, 1)

    assert before_start.kind is OutcomeKind.RETRIABLE
    assert after_stop.kind is OutcomeKind.RETRIABLE
    assert receiver.requests == []


# -- signed webhooks -------------------------------------------------------------------------


def signing(secrets: dict[str, list[str]]) -> HttpSettings:
    return HttpSettings.from_env(
        {**LOOPBACK_ALLOWED, "TIMEFUSE_WEBHOOK_SECRETS": json.dumps(secrets)}
    )


async def test_a_source_with_a_secret_sends_signatures_its_receiver_verifies(
    receiver: Receiver,
) -> None:
    receiver.secret = CURRENT_SECRET
    delivery = await started(signing({"billing": [CURRENT_SECRET]}))
    try:
        event = make_event(source="billing", destination=receiver.url("/signed"), payload=PAYLOAD)
        outcome = await delivery.deliver(event, 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS, outcome
    [request] = receiver.requests
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.body == PAYLOAD


@pytest.mark.parametrize("known", [CURRENT_SECRET, PREVIOUS_SECRET])
async def test_while_a_secret_rotates_a_receiver_knowing_either_one_verifies(
    receiver: Receiver, known: str
) -> None:
    receiver.secret = known
    delivery = await started(signing({"*": [CURRENT_SECRET, PREVIOUS_SECRET]}))
    try:
        outcome = await delivery.deliver(event_to(receiver.url("/signed")), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS, outcome
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2


async def test_a_receiver_with_another_secret_rejects_the_delivery(receiver: Receiver) -> None:
    receiver.secret = PREVIOUS_SECRET
    delivery = await started(signing({"*": [CURRENT_SECRET]}))
    try:
        outcome = await delivery.deliver(event_to(receiver.url("/signed")), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.status_code == 401


async def test_a_source_without_secrets_is_delivered_unsigned(receiver: Receiver) -> None:
    delivery = await started(signing({"billing": [CURRENT_SECRET]}))
    try:
        event = make_event(source="shipping", destination=receiver.url("/status/200"))
        outcome = await delivery.deliver(event, 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS
    [request] = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == event.id
