"""Credentials toward receivers, against real local servers: a token endpoint, receivers that
demand a bearer token or a client certificate, and receivers verifying signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import pytest
import standardwebhooks
from aiohttp import web

from tests.support.process import TimefuseProcess
from tests.support.tls import Pki, make_pki
from timefuse.domain.outcome import OutcomeKind
from timefuse.plugins.http import HttpDelivery
from timefuse.plugins.http_credentials import TokenSource
from timefuse.plugins.http_credentials_file import ClientCredentials
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.signing_keys import SigningKey, SigningKeyring
from timefuse.testing.factories import make_event
from timefuse.webhooks import WebhookVerificationError, new_secret, new_signing_key, verify

EVENTS = "/api/v1/events"
LOOPBACK_ALLOWED = {"TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8"}
CLIENT_ID = "timefuse-client"
CLIENT_SECRET = "s3cr3t-Client/Secret+with=odd&chars"


async def start_site(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@dataclass
class BearerWorld:
    """A token endpoint and a receiver that accepts only the tokens it issued and not revoked."""

    port: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    answers: list[int] = field(default_factory=list)
    # What the token endpoint answers instead of a token, when set: (status, body; JSON
    # unless it is text).
    token_failure: tuple[int, dict[str, str] | str] | None = None
    # False: the receiver refuses every token, even fresh ones.
    accepting: bool = True
    expires_in: int = 3600
    token_prefix: str = "token-"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/hook", self._hook)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        in_header = request.headers.get("Authorization") == f"Basic {expected}"
        in_body = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        if not (in_header or in_body):
            return web.json_response({"error": "invalid_client"}, status=401)
        if self.token_failure is not None:
            status, body = self.token_failure
            if isinstance(body, str):
                return web.Response(status=status, text=body, content_type="text/html")
            return web.json_response(body, status=status)
        token = f"{self.token_prefix}{len(self.token_requests)}"
        self.valid.add(token)
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        return web.json_response(answer)

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        accepted = self.accepting and scheme == "Bearer" and token in self.valid
        status = 204 if accepted else 401
        self.answers.append(status)
        return web.Response(status=status)


@pytest.fixture
async def bearer_world() -> AsyncIterator[BearerWorld]:
    world = BearerWorld()
    runner, world.port = await start_site(world.app())
    yield world
    await runner.cleanup()


def credentials_file(tmp_path: Path, toml: str) -> dict[str, str]:
    path = tmp_path / "credentials.toml"
    path.write_text(toml)
    return {"TIMEFUSE_HTTP_CREDENTIALS_FILE": str(path)}


async def deliver_once(env: dict[str, str], destination: str) -> tuple[OutcomeKind, str | None]:
    delivery = HttpDelivery(HttpSettings.from_env(env))
    await delivery.start()
    try:
        outcome = await delivery.deliver(make_event(destination=destination), 1)
    finally:
        await delivery.stop()
    return outcome.kind, outcome.error


def oauth_toml(world: BearerWorld, tmp_path: Path) -> str:
    (tmp_path / "client-secret").write_text(CLIENT_SECRET + "\n")
    return f"""
[[destinations]]
match = "{world.url("/hook")}"
[destinations.oauth2_client_credentials]
token_url = "{world.url("/token")}"
client_id = "{CLIENT_ID}"
client_secret_file = "client-secret"
scope = ["webhooks:write", "webhooks:read"]
audience = "https://receiver.example"
"""


@pytest.fixture
async def oauth_delivery(bearer_world: BearerWorld, tmp_path: Path) -> AsyncIterator[HttpDelivery]:
    env = {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, oauth_toml(bearer_world, tmp_path))}
    delivery = HttpDelivery(HttpSettings.from_env(env))
    await delivery.start()
    yield delivery
    await delivery.stop()


# -- OAuth 2.0 client credentials ------------------------------------------------------------


async def test_one_token_is_fetched_for_many_deliveries(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    events = [make_event(destination=bearer_world.url("/hook")) for _ in range(20)]

    outcomes = await asyncio.gather(*(oauth_delivery.deliver(e, 1) for e in events))

    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCESS] * 20
    assert bearer_world.answers == [204] * 20
    [request] = bearer_world.token_requests
    assert request == {
        "grant_type": "client_credentials",
        "scope": "webhooks:write webhooks:read",
        "audience": "https://receiver.example",
    }


async def test_a_401_fetches_a_new_token_once_and_the_attempt_goes_through(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    destination = bearer_world.url("/hook")
    assert (await oauth_delivery.deliver(make_event(destination=destination), 1)).succeeded
    bearer_world.valid.clear()  # the receiver stops accepting the cached token

    outcomes = await asyncio.gather(
        *(oauth_delivery.deliver(make_event(destination=destination), 1) for _ in range(5))
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCESS] * 5
    # One renewal for all five refused requests, however they interleaved.
    assert len(bearer_world.token_requests) == 2
    assert bearer_world.answers.count(401) == 5
    assert bearer_world.answers.count(204) == 6


async def test_a_token_still_refused_after_renewal_is_the_receivers_answer(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    bearer_world.accepting = False

    outcome = await oauth_delivery.deliver(make_event(destination=bearer_world.url("/hook")), 1)

    assert outcome.kind is OutcomeKind.PERMANENT
    assert outcome.status_code == 401
    assert len(bearer_world.token_requests) == 2  # the first token, and one renewal only
    assert bearer_world.answers == [401, 401]


async def test_the_client_may_authenticate_in_the_body(
    bearer_world: BearerWorld, tmp_path: Path
) -> None:
    toml = oauth_toml(bearer_world, tmp_path) + 'auth_method = "client_secret_post"\n'
    env = {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)}

    kind, error = await deliver_once(env, bearer_world.url("/hook"))

    assert (kind, error) == (OutcomeKind.SUCCESS, None)
    [request] = bearer_world.token_requests
    assert (request["client_id"], request["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)


async def test_a_token_answer_that_is_not_json_is_retriable(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    bearer_world.token_failure = (200, "<html>maintenance</html>")

    outcome = await oauth_delivery.deliver(make_event(destination=bearer_world.url("/hook")), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "is not a JSON object" in outcome.error


@pytest.mark.parametrize(
    ("expires_in", "renewed_at"),
    [(3600, 3540.0), (100, 90.0)],  # a tenth of the lifetime ahead, at most a minute
)
async def test_a_token_is_renewed_shortly_before_it_expires(
    bearer_world: BearerWorld, tmp_path: Path, expires_in: int, renewed_at: float
) -> None:
    bearer_world.expires_in = expires_in
    env = credentials_file(tmp_path, oauth_toml(bearer_world, tmp_path))
    [entry] = HttpSettings.from_env(env).credentials.entries
    assert isinstance(entry.auth, ClientCredentials)
    now = [0.0]
    async with aiohttp.ClientSession() as session:
        tokens = TokenSource("test", entry.auth, lambda: session, clock=lambda: now[0])
        first = await tokens.authorization()
        now[0] = renewed_at - 0.5
        still = await tokens.authorization()
        now[0] = renewed_at + 0.5
        renewed = await tokens.authorization()

    assert (first, still, renewed) == ("Bearer token-1", "Bearer token-1", "Bearer token-2")
    assert tokens.fetches == 2


async def test_destinations_the_file_does_not_name_get_no_credentials(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    outcome = await oauth_delivery.deliver(make_event(destination=bearer_world.url("/hook2")), 1)

    assert outcome.kind is OutcomeKind.PERMANENT  # 404: no such route, and no token asked
    assert bearer_world.token_requests == []


async def test_a_failing_token_endpoint_is_a_retriable_outcome_that_never_shows_the_secret(
    bearer_world: BearerWorld, oauth_delivery: HttpDelivery
) -> None:
    # A careless token endpoint that echoes what it was sent.
    bearer_world.token_failure = (
        400,
        {"error": "invalid_scope", "error_description": f"scope refused for {CLIENT_SECRET}"},
    )

    outcome = await oauth_delivery.deliver(make_event(destination=bearer_world.url("/hook")), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "invalid_scope" in outcome.error
    assert "[redacted]" in outcome.error
    assert CLIENT_SECRET not in outcome.error
    assert bearer_world.answers == []  # the receiver never got a request without a token


async def test_a_token_endpoint_that_is_down_is_retriable(
    bearer_world: BearerWorld, tmp_path: Path
) -> None:
    toml = oauth_toml(bearer_world, tmp_path).replace(
        bearer_world.url("/token"), "http://127.0.0.1:9/token"
    )
    env = {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)}
    delivery = HttpDelivery(HttpSettings.from_env(env))
    await delivery.start()
    try:
        outcome = await delivery.deliver(make_event(destination=bearer_world.url("/hook")), 1)
    finally:
        await delivery.stop()

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert outcome.error is not None
    assert "token endpoint unreachable" in outcome.error


@dataclass
class HeaderReceiver:
    port: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver_with_headers() -> AsyncIterator[HeaderReceiver]:
    received = HeaderReceiver()

    async def record(request: web.Request) -> web.Response:
        await request.read()
        received.headers.append(dict(request.headers))
        return web.Response(status=204)

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        received.headers.append(dict(request.headers))
        return web.Response(status=403)

    app = web.Application()
    app.router.add_post("/hook", record)
    app.router.add_post("/basic", refuse)
    runner, received.port = await start_site(app)
    yield received
    await runner.cleanup()


@pytest.mark.parametrize(
    ("kind", "toml", "expected"),
    [
        ("header", 'header = { name = "X-Api-Key", value = "k-123" }', ("X-Api-Key", "k-123")),
        (
            "basic",
            'basic = { username = "timefuse", password = "p@ss:word" }',
            ("Authorization", "Basic " + base64.b64encode(b"timefuse:p@ss:word").decode()),
        ),
    ],
)
async def test_static_credentials_are_sent_to_their_destination(
    receiver_with_headers: HeaderReceiver,
    tmp_path: Path,
    kind: str,
    toml: str,
    expected: tuple[str, str],
) -> None:
    match = f"127.0.0.1:{receiver_with_headers.port}"
    entry = f'[[destinations]]\nmatch = "{match}"\n{toml}\n'
    env = {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, entry)}

    kind, _ = await deliver_once(env, receiver_with_headers.url)

    assert kind is OutcomeKind.SUCCESS
    [headers] = receiver_with_headers.headers
    name, value = expected
    assert headers[name] == value
    assert "webhook-id" in headers  # timefuse's own headers are still there


# -- mutual TLS ------------------------------------------------------------------------------


@dataclass
class TlsReceiver:
    port: int = 0
    clients: list[str] = field(default_factory=list)

    def url(self, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/hook"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def tls_receiver(pki: Pki) -> AsyncIterator[TlsReceiver]:
    received = TlsReceiver()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection

    async def record(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        peer = request.transport.get_extra_info("peercert")
        subject = dict(item[0] for item in peer["subject"])
        received.clients.append(subject["commonName"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", record)
    runner, received.port = await start_site(app, context)
    yield received
    await runner.cleanup()


def tls_toml(match: str, **files: Path) -> str:
    fields = ", ".join(f'{name} = "{path}"' for name, path in files.items())
    return f'[[destinations]]\nmatch = "{match}"\ntls = {{ {fields} }}\n'


async def test_a_receiver_demanding_a_client_certificate_accepts_timefuses(
    tls_receiver: TlsReceiver, pki: Pki, tmp_path: Path
) -> None:
    toml = tls_toml(
        f"127.0.0.1:{tls_receiver.port}",
        cert_file=pki.client.cert,
        key_file=pki.client.key,
        ca_file=pki.ca,
    )

    kind, error = await deliver_once(
        {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)}, tls_receiver.url()
    )

    assert (kind, error) == (OutcomeKind.SUCCESS, None)
    assert tls_receiver.clients == ["timefuse-client"]


@pytest.mark.parametrize(
    "case", ["no client certificate", "a certificate from another CA", "plain http"]
)
async def test_a_receiver_demanding_a_client_certificate_refuses_other_connections(
    tls_receiver: TlsReceiver, pki: Pki, tmp_path: Path, case: str
) -> None:
    match = f"127.0.0.1:{tls_receiver.port}"
    toml, scheme = {
        "no client certificate": (tls_toml(match, ca_file=pki.ca), "https"),
        "a certificate from another CA": (
            tls_toml(match, cert_file=pki.stranger.cert, key_file=pki.stranger.key, ca_file=pki.ca),
            "https",
        ),
        "plain http": (tls_toml(match, ca_file=pki.ca), "http"),
    }[case]

    kind, error = await deliver_once(
        {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)}, tls_receiver.url(scheme)
    )

    assert kind is OutcomeKind.RETRIABLE, error
    assert tls_receiver.clients == []


async def test_a_connection_made_with_a_client_certificate_serves_only_its_entry(
    tls_receiver: TlsReceiver, pki: Pki, tmp_path: Path
) -> None:
    base = f"https://127.0.0.1:{tls_receiver.port}"
    toml = tls_toml(
        f"{base}/hook", cert_file=pki.client.cert, key_file=pki.client.key, ca_file=pki.ca
    ) + tls_toml(f"{base}/other", ca_file=pki.ca)
    delivery = HttpDelivery(
        HttpSettings.from_env({**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)})
    )
    await delivery.start()
    try:
        first = await delivery.deliver(make_event(destination=f"{base}/hook"), 1)
        # Same host and port, and a pooled connection that presented the certificate: it
        # must not carry a request of an entry without one.
        second = await delivery.deliver(make_event(destination=f"{base}/other"), 1)
    finally:
        await delivery.stop()

    assert first.succeeded
    assert second.kind is OutcomeKind.RETRIABLE
    assert tls_receiver.clients == ["timefuse-client"]


async def test_the_ca_bundle_of_an_entry_is_the_only_one_trusted_for_it(
    tls_receiver: TlsReceiver, pki: Pki, tmp_path: Path
) -> None:
    # The client certificate is fine, but the receiver's certificate isn't signed by the
    # CA the entry names (another CA's certificate stands in for the bundle).
    toml = tls_toml(
        f"127.0.0.1:{tls_receiver.port}",
        cert_file=pki.client.cert,
        key_file=pki.client.key,
        ca_file=pki.stranger.cert,
    )

    kind, error = await deliver_once(
        {**LOOPBACK_ALLOWED, **credentials_file(tmp_path, toml)}, tls_receiver.url()
    )

    assert kind is OutcomeKind.RETRIABLE
    assert error is not None
    assert "certificate" in error.lower()
    assert tls_receiver.clients == []


async def test_the_ssrf_guard_still_applies_to_destinations_with_credentials(
    tls_receiver: TlsReceiver, pki: Pki, tmp_path: Path
) -> None:
    toml = tls_toml(
        f"localhost:{tls_receiver.port}",
        cert_file=pki.client.cert,
        key_file=pki.client.key,
        ca_file=pki.ca,
    )

    # No TIMEFUSE_HTTP_ALLOWED_NETWORKS: loopback is refused, by name too.
    kind, error = await deliver_once(
        credentials_file(tmp_path, toml), f"https://localhost:{tls_receiver.port}/hook"
    )

    assert kind is OutcomeKind.PERMANENT
    assert error is not None
    assert "not allowed" in error
    assert tls_receiver.clients == []


# -- signing-key rotation --------------------------------------------------------------------


@dataclass
class VerifyingReceivers:
    """Receivers each holding one key, verifying every delivery they get."""

    port: int = 0
    # path -> the secret (whsec_) or public key (whpk_) the receiver at that path holds
    keys: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, list[bool]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = self.keys[request.path]
        headers = dict(request.headers)
        try:
            if key.startswith("whpk_"):
                verify(body, headers, key)
            else:
                # The reference implementation, so the check isn't timefuse's own.
                standardwebhooks.Webhook(key).verify(body, headers)
            accepted = True
        except (WebhookVerificationError, standardwebhooks.webhooks.WebhookVerificationError):
            accepted = False
        self.verdicts.setdefault(request.path, []).append(accepted)
        return web.Response(status=204 if accepted else 401)


@pytest.fixture
async def verifying_receivers() -> AsyncIterator[VerifyingReceivers]:
    receivers = VerifyingReceivers()
    app = web.Application()
    app.router.add_post("/{name}", receivers.handle)
    runner, receivers.port = await start_site(app)
    yield receivers
    await runner.cleanup()


async def test_during_an_overlap_receivers_with_only_the_old_or_only_the_new_key_verify(
    verifying_receivers: VerifyingReceivers, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old, new = new_secret(), new_secret()
    signing_key, public_key = new_signing_key()
    keyring = SigningKeyring(tmp_path / "keys.json")
    keyring.add(SigningKey("old", "billing", old, expires_at=now + timedelta(hours=1)))
    keyring.add(SigningKey("new", "billing", new, not_before=now - timedelta(minutes=1)))
    keyring.add(SigningKey("asym", "billing", signing_key, not_before=now - timedelta(minutes=1)))
    # Not yet active: its signature must not be in the header.
    keyring.add(SigningKey("later", "billing", new_secret(), not_before=now + timedelta(hours=1)))
    verifying_receivers.keys = {"/old": old, "/new": new, "/public": public_key}
    env = {**LOOPBACK_ALLOWED, "TIMEFUSE_SIGNING_KEYS_FILE": str(keyring.path)}
    delivery = HttpDelivery(HttpSettings.from_env(env))
    await delivery.start()
    try:
        outcomes = [
            await delivery.deliver(
                make_event(source="billing", destination=verifying_receivers.url(path)), 1
            )
            for path in ("/old", "/new", "/public") * 5
        ]
    finally:
        await delivery.stop()

    assert all(outcome.succeeded for outcome in outcomes)
    assert verifying_receivers.verdicts == {
        path: [True] * 5 for path in ("/old", "/new", "/public")
    }


async def test_a_retired_key_no_longer_signs_and_its_receiver_refuses(
    verifying_receivers: VerifyingReceivers, tmp_path: Path
) -> None:
    old, new = new_secret(), new_secret()
    keyring = SigningKeyring(tmp_path / "keys.json")
    keyring.add(SigningKey("old", "billing", old))
    keyring.add(SigningKey("new", "billing", new))
    keyring.remove("old")
    verifying_receivers.keys = {"/old": old, "/new": new}
    env = {**LOOPBACK_ALLOWED, "TIMEFUSE_SIGNING_KEYS_FILE": str(keyring.path)}
    delivery = HttpDelivery(HttpSettings.from_env(env))
    await delivery.start()
    try:
        for path in ("/old", "/new"):
            await delivery.deliver(
                make_event(source="billing", destination=verifying_receivers.url(path)), 1
            )
    finally:
        await delivery.stop()

    assert verifying_receivers.verdicts == {"/old": [False], "/new": [True]}


# -- secrets stay secret ---------------------------------------------------------------------


async def test_no_secret_shows_in_logs_attempts_metrics_or_api_answers(
    processes: Callable[..., TimefuseProcess],
    receiver_with_headers: HeaderReceiver,
    tmp_path: Path,
) -> None:
    marker = uuid.uuid4().hex
    header_value, password = f"hdr-{marker}", f"pw-{marker}"
    failing, working = BearerWorld(), BearerWorld(token_prefix=f"tok-{marker}-")
    # A careless token endpoint that echoes the client secret in its error.
    failing.token_failure = (400, {"error": "invalid_client", "error_description": CLIENT_SECRET})
    runners = []
    for world in (failing, working):
        runner, world.port = await start_site(world.app())
        runners.append(runner)
    (tmp_path / "client-secret").write_text(CLIENT_SECRET)
    oauth = "\n".join(
        f"""
[[destinations]]
match = "127.0.0.1:{world.port}"
[destinations.oauth2_client_credentials]
token_url = "{world.url("/token")}"
client_id = "{CLIENT_ID}"
client_secret_file = "{tmp_path / "client-secret"}"
"""
        for world in (failing, working)
    )
    toml = f"""
[[destinations]]
match = "{receiver_with_headers.url}"
header = {{ name = "X-Api-Key", value = "{header_value}" }}
[[destinations]]
match = "http://127.0.0.1:{receiver_with_headers.port}/basic"
basic = {{ username = "timefuse", password = "{password}" }}
{oauth}
"""
    env = {
        **credentials_file(tmp_path, toml),
        "TIMEFUSE_SIGNING_KEYS_FILE": str(tmp_path / "signing-keys.json"),
        "TIMEFUSE_LOG_LEVEL": "debug",
    }
    tf = processes(env)
    secrets = [
        CLIENT_SECRET,
        base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
        header_value,
        password,
        base64.b64encode(f"timefuse:{password}".encode()).decode(),
        f"tok-{marker}-",
    ]
    try:
        async with httpx.AsyncClient(base_url=tf.base_url, timeout=10.0) as client:
            created = await client.post(EVENTS + "/admin/signing-keys", json={"source": "leaks"})
            assert created.status_code == 201, created.text
            secrets.append(created.json()["data"]["secret"])  # shown once, there only
            destinations = [
                receiver_with_headers.url,
                f"http://127.0.0.1:{receiver_with_headers.port}/basic",
                failing.url("/hook"),
                working.url("/hook"),
            ]
            ids = [await submit_now(client, destination) for destination in destinations]
            answers = await settled(client, ids)
            answers += [
                (await client.get(path)).text
                for path in (EVENTS, EVENTS + "/admin/signing-keys", "/metrics", "/openapi.json")
            ]
    finally:
        for runner in runners:
            await runner.cleanup()

    statuses = [json.loads(answer)["data"]["status"] for answer in answers[: len(ids)]]
    assert statuses == ["COMPLETED", "FAILED", "DEAD_LETTER", "COMPLETED"]
    assert "invalid_client" in answers[2]  # the reason is there, scrubbed
    assert working.answers == [204]
    log = tf.log_path.read_text()
    assert "oauth2 token fetched" in log
    for text in [log, *answers]:
        for secret in secrets:
            assert secret not in text


async def submit_now(client: httpx.AsyncClient, destination: str) -> str:
    response = await client.post(
        EVENTS,
        json={
            "external_job_id": f"leak-{uuid.uuid4().hex[:8]}",
            "source": "leaks",
            "scheduled_at": datetime.now(UTC).isoformat(),
            "delivery_type": "http",
            "destination": destination,
            "payload": {"n": 1},
            "max_retries": 0,
        },
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["data"]["id"]
    return event_id


async def settled(client: httpx.AsyncClient, ids: list[str]) -> list[str]:
    """Each event and its attempts once every event is past PROCESSING (as answered)."""
    deadline = time.monotonic() + 30
    while True:
        events = [await client.get(f"{EVENTS}/{event_id}") for event_id in ids]
        if all(e.json()["data"]["status"] not in ("PENDING", "PROCESSING") for e in events):
            attempts = [await client.get(f"{EVENTS}/{event_id}/attempts") for event_id in ids]
            return [e.text for e in events] + [a.text for a in attempts]
        assert time.monotonic() < deadline, [e.text for e in events]
        await asyncio.sleep(0.2)
