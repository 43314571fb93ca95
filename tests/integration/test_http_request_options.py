"""Per-event HTTP options against a real receiver: method, headers, body, timeout, statuses."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.integration.test_http_delivery import (
    CURRENT_SECRET,
    LOOPBACK_ALLOWED,
    PAYLOAD,
    Receiver,
    signing,
    started,
)
from timefuse.domain.event import Event
from timefuse.domain.http_options import NO_PAYLOAD, HttpLimits, check_options
from timefuse.domain.outcome import OutcomeKind
from timefuse.plugins.http import TIMEOUT_MARGIN_SECONDS
from timefuse.plugins.http_settings import HttpSettings
from timefuse.testing.factories import make_event

XML = b'<?xml version="1.0"?>\n<order id="42">\r\n  <name>caf\xc3\xa9</name>  </order>'


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = TestServer(receiver.app(), host="127.0.0.1")
    await server.start_server()
    receiver.base_url = str(server.make_url("")).rstrip("/")
    yield receiver
    receiver.released.set()
    await server.close()


def http_event(destination: str, http: dict[str, Any], **overrides: Any) -> Event:
    stored, errors = check_options(http, HttpLimits())
    assert errors == []
    payload = NO_PAYLOAD if "body" in stored else overrides.pop("payload", PAYLOAD)
    return make_event(destination=destination, http=stored, payload=payload, **overrides)


async def test_a_put_with_headers_and_an_xml_body_arrives_byte_for_byte_and_verifies(
    receiver: Receiver,
) -> None:
    receiver.secret = CURRENT_SECRET
    delivery = await started(signing({"billing": [CURRENT_SECRET]}))
    http = {
        "method": "PUT",
        "headers": {"X-Tenant": "acme", "X-Trace": "a b\tc"},
        "body": XML.decode(),
        "content_type": "application/xml",
    }
    try:
        event = http_event(receiver.url("/signed"), http, source="billing")
        outcome = await delivery.deliver(event, 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS, outcome
    [request] = receiver.requests
    assert request.method == "PUT"
    assert request.body == XML
    assert request.headers["Content-Type"] == "application/xml"
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["X-Trace"] == "a b\tc"
    assert request.headers["webhook-id"] == event.id


async def test_a_base64_body_is_sent_as_its_bytes(receiver: Receiver) -> None:
    raw = bytes(range(256))
    http = {"method": "PATCH", "body": base64.b64encode(raw).decode(), "body_encoding": "base64"}
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    try:
        outcome = await delivery.deliver(http_event(receiver.url("/status/204"), http), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS
    [request] = receiver.requests
    assert (request.method, request.body) == ("PATCH", raw)
    assert request.headers["Content-Type"] == "application/octet-stream"


async def test_a_get_without_payload_sends_no_body(receiver: Receiver) -> None:
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    try:
        event = http_event(receiver.url("/status/200"), {"method": "GET"}, payload=NO_PAYLOAD)
        outcome = await delivery.deliver(event, 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS
    [request] = receiver.requests
    assert (request.method, request.body) == ("GET", b"")
    assert "Content-Type" not in request.headers


async def test_a_receiver_slower_than_the_events_timeout_times_out_then_not_at_30_s(
    receiver: Receiver,
) -> None:
    # The delivery type's default stays 30 s; the event asks for 0.3 s. The receiver holds
    # every request for 10 s, so the attempt ends only through the event's own timeout.
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    event = http_event(receiver.url("/slow"), {"timeout_seconds": 0.3})
    try:
        started_at = time.monotonic()
        outcome = await delivery.deliver(event, 1)
        elapsed = time.monotonic() - started_at
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "0.3s" in outcome.error
    assert receiver.paths == ["/slow"]
    # Not before the event's timeout, and nowhere near the 30 s default (a wide upper bound:
    # this is a behaviour check on a shared machine, not a timing measurement).
    assert 0.3 <= elapsed < 2
    assert delivery.attempt_timeout(event) == pytest.approx(0.3 + TIMEOUT_MARGIN_SECONDS)


@pytest.mark.parametrize(
    ("statuses", "answer", "kind"),
    [
        ([200, 404], 404, OutcomeKind.SUCCESS),
        ([200, 404], 202, OutcomeKind.PERMANENT),
        ([200], 503, OutcomeKind.RETRIABLE),
    ],
)
async def test_success_statuses_decide_what_counts_as_delivered(
    receiver: Receiver, statuses: list[int], answer: int, kind: OutcomeKind
) -> None:
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    event = http_event(receiver.url(f"/status/{answer}"), {"success_statuses": statuses})
    try:
        outcome = await delivery.deliver(event, 1)
    finally:
        await delivery.stop()

    assert outcome.kind is kind
    assert outcome.status_code == answer


async def test_the_start_of_the_receivers_answer_is_kept_for_callbacks(
    receiver: Receiver,
) -> None:
    delivery = await started(HttpSettings.from_env(LOOPBACK_ALLOWED))
    try:
        outcome = await delivery.deliver(http_event(receiver.url("/big"), {}), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.response_excerpt == "x" * 1024
