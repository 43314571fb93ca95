"""/metrics names receivers only to a caller that may see them, on every listener that serves
it, and a scrape is rendered off the event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tests.unit.test_api_harness import Harness, bearer, running_api
from timefuse import hookimpl
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.entrypoints.auth import hash_key
from timefuse.entrypoints.runner import metrics_app
from timefuse.ports.delivery import DeliveryType
from timefuse.service.gate import Claimed
from timefuse.service.metrics import Metrics
from timefuse.testing.factories import make_event

KEYS = {
    "alpha-metrics": "tfk_alpha_metrics",
    "beta-metrics": "tfk_beta_metrics",
    "all-metrics": "tfk_all_metrics",
    "alpha-reader": "tfk_alpha_reader",
    "admin": "tfk_admin",
}
SECRET = "secret-partner.internal.example:8443"  # alpha's receiver
BETA = "beta.example:443"

Register = Callable[[DeliveryType], None]


def keys_file(path: Path) -> Path:
    entries = [
        ("alpha-metrics", '["alpha"]', '["metrics"]'),
        ("beta-metrics", '["beta"]', '["metrics"]'),
        ("all-metrics", '"*"', '["metrics"]'),
        ("alpha-reader", '["alpha"]', '["read"]'),
        ("admin", '"*"', '["admin"]'),
    ]
    path.write_text(
        "".join(
            f'[[keys]]\nname = "{name}"\nsha256 = "{hash_key(KEYS[name])}"\n'
            f"sources = {sources}\nroles = {roles}\n\n"
            for name, sources, roles in entries
        )
    )
    return path


class Parked:
    """A delivery type whose attempts stay in flight until the test ends."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        await self.release.wait()
        return DeliveryOutcome.success()

    @hookimpl
    def register_delivery_types(self, register: Register) -> None:
        register(DeliveryType("parked", lambda d: None, self.deliver))


def in_flight(api: Harness, source: str, url: str) -> None:
    event = make_event(
        source=source, destination=url, delivery_type="parked", locked_by="w", claim_count=1
    )
    api.tf.dispatcher.gate.admit(Claimed.of(event, 0.0))


@asynccontextmanager
async def parked_api(tmp_path: Path, env: dict[str, str] | None = None) -> AsyncIterator[Harness]:
    parked = Parked()
    async with running_api(tmp_path, env=env, plugins=(parked,)) as harness:
        try:
            yield harness
        finally:
            parked.release.set()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    env = {"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml"))}
    async with parked_api(tmp_path, env=env) as harness:
        in_flight(harness, "alpha", f"https://{SECRET}/hook")
        in_flight(harness, "beta", "https://beta.example/hook")
        yield harness


async def scrape(client: httpx.AsyncClient, key: str | None) -> httpx.Response:
    return await client.get("/metrics", headers=bearer(KEYS[key] if key else None))


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("alpha-metrics", {SECRET}),
        ("beta-metrics", {BETA}),
        ("all-metrics", {SECRET, BETA}),
        ("admin", {SECRET, BETA}),
    ],
)
async def test_a_metrics_key_sees_the_receivers_of_its_own_sources(
    api: Harness, key: str, shown: set[str]
) -> None:
    response = await scrape(api.client, key)

    assert response.status_code == 200
    for host in {SECRET, BETA}:
        assert (f'destination="{host}"' in response.text) is (host in shown), host


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("alpha-metrics", {"alpha"}),
        ("beta-metrics", {"beta"}),
        ("all-metrics", {"alpha", "beta", "*"}),
        ("admin", {"alpha", "beta", "*"}),
    ],
)
async def test_a_metrics_key_sees_the_quota_rejections_of_its_own_sources(
    api: Harness, key: str, shown: set[str]
) -> None:
    # Entries as the quotas count them: a source's own, and * for sources without one.
    for entry in ("alpha", "beta", "*"):
        api.metrics.quota_rejections.labels(entry, "rate").inc()

    text = (await scrape(api.client, key)).text

    listed = {
        line.split('source="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("timefuse_quota_rejections_total{")
    }
    assert listed == shown
    # Narrowed for the scrape only: the next caller sees its own.
    others = (await scrape(api.client, "all-metrics")).text
    assert others.count("timefuse_quota_rejections_total{") == 3


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("alpha-reader", 403)])
async def test_no_receiver_is_named_without_a_metrics_key(
    api: Harness, key: str | None, status: int
) -> None:
    response = await scrape(api.client, key)

    assert response.status_code == status
    assert "secret-partner" not in response.text


async def test_public_metrics_name_no_receiver(tmp_path: Path) -> None:
    env = {
        "TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml")),
        "TIMEFUSE_METRICS_AUTH": "false",
    }
    async with parked_api(tmp_path, env=env) as harness:
        in_flight(harness, "alpha", f"https://{SECRET}/hook")
        anonymous = await scrape(harness.client, None)
        keyed = await scrape(harness.client, "alpha-metrics")

    assert anonymous.status_code == 200
    assert "timefuse_events_received" in anonymous.text
    assert "secret-partner" not in anonymous.text
    assert f'destination="{SECRET}"' in keyed.text


async def test_the_series_per_destination_are_capped(tmp_path: Path) -> None:
    env = {"TIMEFUSE_METRICS_DESTINATIONS": "2"}
    async with parked_api(tmp_path, env=env) as harness:
        for n in range(5):
            in_flight(harness, "alpha", f"https://host-{n}.example/hook")
        body = (await scrape(harness.client, None)).text

    assert body.count("timefuse_destination_in_flight{") == 2
    assert "timefuse_destinations_tracked 5.0" in body


# -- the listener of a process without the API (dispatch, ingest) --------------------------------


@pytest.fixture
def bound() -> Iterator[tuple[socket.socket, socket.socket]]:
    loopback = socket.socket()
    loopback.bind(("127.0.0.1", 0))
    exposed = socket.socket()
    exposed.bind(("0.0.0.0", 0))  # the exposed case is the point
    yield loopback, exposed
    loopback.close()
    exposed.close()


def client_of(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://timefuse")


async def test_the_metrics_listener_needs_a_metrics_key_when_keys_are_configured(
    api: Harness, bound: tuple[socket.socket, socket.socket]
) -> None:
    async with client_of(metrics_app(api.tf, bound[1])) as client:
        anonymous = await scrape(client, None)
        reader = await scrape(client, "alpha-reader")
        alpha = await scrape(client, "alpha-metrics")
        health = await client.get("/health/live")

    assert (anonymous.status_code, reader.status_code, alpha.status_code) == (401, 403, 200)
    assert "secret-partner" not in anonymous.text + reader.text
    assert f'destination="{SECRET}"' in alpha.text
    assert f'destination="{BETA}"' not in alpha.text
    assert health.status_code == 200  # probes stay public


async def test_without_keys_only_a_loopback_metrics_listener_names_receivers(
    tmp_path: Path, bound: tuple[socket.socket, socket.socket]
) -> None:
    loopback, exposed = bound
    async with parked_api(tmp_path) as harness:
        in_flight(harness, "alpha", f"https://{SECRET}/hook")
        async with client_of(metrics_app(harness.tf, loopback)) as client:
            local = await scrape(client, None)
        async with client_of(metrics_app(harness.tf, exposed)) as client:
            remote = await scrape(client, None)

    assert (local.status_code, remote.status_code) == (200, 200)
    assert f'destination="{SECRET}"' in local.text
    assert "secret-partner" not in remote.text
    assert "timefuse_events_received" in remote.text


# -- rendering ------------------------------------------------------------------------------------


class _Witness(Collector):
    """Records the thread each collection runs on, and takes a while doing it."""

    def __init__(self, seconds: float) -> None:
        self.threads: list[int] = []
        self.seconds = seconds

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        threading.Event().wait(self.seconds)  # a large scrape's rendering time
        yield GaugeMetricFamily("timefuse_test_witness", "A test's collector.", value=1.0)


async def test_a_scrape_is_rendered_off_the_event_loop() -> None:
    metrics = Metrics()
    witness = _Witness(0.3)
    metrics.registry.register(witness)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        body = await metrics.exposition(None)
    finally:
        ticker.cancel()

    assert b"timefuse_test_witness 1.0" in body
    assert witness.threads
    assert threading.get_ident() not in witness.threads
    assert ticks >= 5  # the loop kept running while the scrape rendered
