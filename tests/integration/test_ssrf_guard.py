"""The SSRF guard of http delivery, against a real receiver on 127.0.0.1.

Loopback stands in for every internal address: the receiver is reachable, so a request that
got through would be seen, and it is refused unless ``TIMEFUSE_HTTP_ALLOWED_NETWORKS`` allows it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.support.receiver import Receiver
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.plugins.http import HttpDelivery
from timefuse.plugins.http_guard import AddressPolicy, DestinationRefused, GuardedResolver
from timefuse.plugins.http_settings import HttpSettings
from timefuse.testing.factories import make_event

ALLOWED_VARIABLE = "TIMEFUSE_HTTP_ALLOWED_NETWORKS"
LOOPBACK_ALLOWED = {ALLOWED_VARIABLE: "127.0.0.0/8"}


class StaticResolver(AbstractResolver):
    """Answers from a fixed table, as a DNS server under an attacker's control could."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


async def deliver_once(
    destination: str, env: dict[str, str], resolver: AbstractResolver | None = None
) -> DeliveryOutcome:
    delivery = HttpDelivery(HttpSettings.from_env(env), resolver=resolver)
    await delivery.start()
    try:
        return await delivery.deliver(make_event(destination=destination), attempt=1)
    finally:
        await delivery.stop()


def refusal_of(outcome: DeliveryOutcome) -> str:
    assert outcome.kind is OutcomeKind.PERMANENT, outcome
    assert outcome.error is not None
    assert ALLOWED_VARIABLE in outcome.error
    return outcome.error


# -- addresses in the destination ------------------------------------------------------------


async def test_a_receiver_on_loopback_is_refused_by_default(receiver: Receiver) -> None:
    outcome = await deliver_once(receiver.url("/hook"), {})

    assert "127.0.0.1" in refusal_of(outcome)
    assert "loopback" in refusal_of(outcome)
    assert receiver.received == []


async def test_a_receiver_on_loopback_is_reached_when_its_network_is_allowed(
    receiver: Receiver,
) -> None:
    outcome = await deliver_once(receiver.url("/hook"), LOOPBACK_ALLOWED)

    assert outcome.kind is OutcomeKind.SUCCESS
    assert [r.path for r in receiver.received] == ["/hook"]


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001", "127.1"])
async def test_numeric_forms_of_loopback_never_reach_the_receiver(
    receiver: Receiver, host: str
) -> None:
    outcome = await deliver_once(f"http://{host}:{receiver.port}/hook", LOOPBACK_ALLOWED)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert receiver.received == []


# -- names, judged on what they resolve to when connecting -----------------------------------


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    receiver: Receiver,
) -> None:
    destination = f"http://localhost:{receiver.port}/hook"
    delivery = HttpDelivery(HttpSettings.from_env({}))
    assert delivery.validate_destination(destination) is None  # fine at submission

    outcome = await deliver_once(destination, {})

    error = refusal_of(outcome)
    assert "destination localhost resolves to" in error
    assert "loopback" in error
    assert receiver.received == []


async def test_a_name_resolving_to_an_allowed_network_is_reached(receiver: Receiver) -> None:
    outcome = await deliver_once(f"http://localhost:{receiver.port}/hook", LOOPBACK_ALLOWED)

    assert outcome.kind is OutcomeKind.SUCCESS
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_a_name_rebound_to_loopback_after_submission_is_refused(receiver: Receiver) -> None:
    # DNS rebinding: nothing about the name looks internal when the event is submitted; what
    # it resolves to when the event is due is what gets connected to, and what is checked.
    destination = f"http://hooks.example:{receiver.port}/hook"
    assert HttpDelivery(HttpSettings.from_env({})).validate_destination(destination) is None
    rebound = StaticResolver({"hooks.example": ["127.0.0.1"]})

    outcome = await deliver_once(destination, {}, resolver=rebound)

    assert "destination hooks.example resolves to 127.0.0.1" in refusal_of(outcome)
    assert receiver.received == []
    assert rebound.closed


async def test_a_name_resolving_to_an_allowed_address_is_delivered_through_the_guard(
    receiver: Receiver,
) -> None:
    resolver = StaticResolver({"hooks.example": ["127.0.0.1"]})

    outcome = await deliver_once(
        f"http://hooks.example:{receiver.port}/hook", LOOPBACK_ALLOWED, resolver=resolver
    )

    assert outcome.kind is OutcomeKind.SUCCESS
    [request] = receiver.received
    assert request.headers["host"] == f"hooks.example:{receiver.port}"


async def test_a_name_that_does_not_resolve_stays_retriable() -> None:
    outcome = await deliver_once("http://nowhere.example/hook", {}, resolver=StaticResolver({}))

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "connection failed" in outcome.error


async def test_proxy_variables_cannot_route_deliveries_past_the_guard(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy named by IP literal is connected to without the resolver; if the environment
    # were trusted, the receiver (posing as the proxy) would get the request.
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{receiver.port}")
    rebound = StaticResolver({"hooks.example": ["127.0.0.1"]})

    outcome = await deliver_once("http://hooks.example/hook", {}, resolver=rebound)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert receiver.received == []


# -- the guarded resolver itself -------------------------------------------------------------


async def test_the_resolver_keeps_only_allowed_addresses() -> None:
    inner = StaticResolver({"mixed.example": ["10.0.0.1", "127.0.0.1", "::1", "127.0.0.2"]})
    networks = HttpSettings.from_env({ALLOWED_VARIABLE: "127.0.0.0/8"}).allowed_networks
    resolver = GuardedResolver(AddressPolicy(networks), inner)

    results = await resolver.resolve("mixed.example", 443)

    assert [(r["host"], r["port"]) for r in results] == [("127.0.0.1", 443), ("127.0.0.2", 443)]


async def test_the_resolver_lets_public_addresses_through() -> None:
    inner = StaticResolver({"hooks.example": ["93.184.216.34", "2606:2800:220:1::1"]})

    results = await GuardedResolver(AddressPolicy(), inner).resolve("hooks.example", 443)

    assert [r["host"] for r in results] == ["93.184.216.34", "2606:2800:220:1::1"]


async def test_the_resolver_refuses_a_name_with_only_forbidden_addresses() -> None:
    inner = StaticResolver({"internal.example": ["10.0.0.1", "169.254.169.254", "10.0.0.1"]})

    with pytest.raises(DestinationRefused) as refused:
        await GuardedResolver(AddressPolicy(), inner).resolve("internal.example", 80)

    reason = refused.value.reason
    assert "10.0.0.1 (private), 169.254.169.254 (cloud metadata" in reason
    assert reason.count("10.0.0.1") == 1
    assert ALLOWED_VARIABLE in reason


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001"])
async def test_the_resolver_refuses_numeric_forms_getaddrinfo_reads_as_loopback(
    host: str,
) -> None:
    # aiohttp hands some of these to the resolver as names; the system resolver maps them
    # to 127.0.0.1, which the guard sees and refuses.
    with pytest.raises(DestinationRefused, match=r"resolves to 127\.0\.0\.1"):
        await GuardedResolver(AddressPolicy()).resolve(host, 80)
