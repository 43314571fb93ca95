"""What a receiver sees on the wire: the destination as submitted, and never its credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.raw_receiver import Answer, RawReceiver
from timefuse.domain.outcome import OutcomeKind
from timefuse.plugins.http import HttpDelivery
from timefuse.plugins.http_settings import HttpSettings
from timefuse.testing.factories import make_event

OK = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


async def answer_204(answer: Answer) -> None:
    await answer.send(OK)


@pytest.fixture
async def receiver() -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver(answer_204)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def delivery() -> AsyncIterator[HttpDelivery]:
    settings = HttpSettings.from_env({"TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8"})
    delivery = HttpDelivery(settings)
    await delivery.start()
    yield delivery
    await delivery.stop()


def request_line(raw: bytes) -> bytes:
    return raw.split(b"\r\n", 1)[0]


def host_header(raw: bytes) -> bytes:
    for line in raw.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"host":
            return value.strip()
    raise AssertionError("no Host header")


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        ("/a/../b/./c", b"/a/../b/./c"),
        ("/%7Euser/%41%2f%2F/x%20y", b"/%7Euser/%41%2f%2F/x%20y"),
        ("//double//slashes/", b"//double//slashes/"),
        (
            "/p?b=2&a=1&a=%20&next=a/../b&tilde=%7e&plus=+",
            b"/p?b=2&a=1&a=%20&next=a/../b&tilde=%7e&plus=+",
        ),
        ("/p?flag&=&k=", b"/p?flag&=&k="),
        ("/q;params,!$'()*:@", b"/q;params,!$'()*:@"),
        ("/hook#fragment", b"/hook"),
        ("/café?name=é", b"/caf%C3%A9?name=%C3%A9"),
        ("", b"/"),
    ],
)
async def test_the_receiver_gets_the_path_and_query_as_submitted(
    receiver: RawReceiver, delivery: HttpDelivery, target: str, sent: bytes
) -> None:
    outcome = await delivery.deliver(make_event(destination=receiver.url(target)), 1)

    assert outcome.kind is OutcomeKind.SUCCESS, outcome
    [raw] = receiver.requests
    assert request_line(raw) == b"POST " + sent + b" HTTP/1.1"
    assert host_header(raw) == f"127.0.0.1:{receiver.port}".encode()


async def test_credentials_in_a_destination_never_reach_the_receiver(
    receiver: RawReceiver, delivery: HttpDelivery
) -> None:
    destination = receiver.url("/hook").replace("http://", "http://user:secret@")

    outcome = await delivery.deliver(make_event(destination=destination), 1)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert "per-destination credentials" in (outcome.error or "")
    assert receiver.requests == []
