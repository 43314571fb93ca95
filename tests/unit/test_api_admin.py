"""Admin operations beyond events: retention now, and this process's destinations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, error_fields, running_api
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.config import ApiSettings, ConfigError, Settings
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import bootstrap
from timefuse.ports.store import WorkerBeat
from timefuse.service.gate import Claimed, DestinationGate
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import ShiftedClock, claim

CLEANUP = f"{EVENTS}/admin/cleanup"
DESTINATIONS = f"{EVENTS}/admin/destinations"
DESTINATION_FIELDS = {
    "key", "breaker", "breaker_for_all", "held_sources", "consecutive_failures", "trips",
    "in_flight", "waiting", "concurrency", "rate", "probe_in_seconds", "sources",
}  # fmt: skip


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path, env={"CLEANUP_RETENTION_DAYS": "3"}) as harness:
        yield harness


class TestCleanup:
    async def test_terminal_events_go_and_pending_ones_stay(self, api: Harness) -> None:
        done = [await api.attempted(status) for status in (EventStatus.COMPLETED,) * 2]
        dead = await api.attempted(EventStatus.DEAD_LETTER)
        pending = await api.submitted_id()

        response = await api.client.post(CLEANUP, params={"days": "0"})

        assert response.status_code == 200, response.text
        assert_envelope(response.json(), success=True)
        assert response.json()["data"] == {"deleted": 3, "days": 0}
        assert [await api.store.get(event_id) for event_id in (*done, dead)] == [None] * 3
        assert await api.store.get(pending) is not None

    async def test_the_configured_retention_is_the_default(self, api: Harness) -> None:
        recent = await api.attempted(EventStatus.COMPLETED)

        response = await api.client.post(CLEANUP)

        assert response.json()["data"] == {"deleted": 0, "days": 3}
        assert await api.store.get(recent) is not None

    @pytest.mark.parametrize("days", ["-1", "36501", "seven", "1.5", ""])
    async def test_days_out_of_range_answer_400(self, api: Harness, days: str) -> None:
        response = await api.client.post(CLEANUP, params={"days": days})

        assert response.status_code == 400
        assert error_fields(response) == {"days"}
        assert "days" in response.json()["message"]

    async def test_the_largest_retention_is_accepted(self, api: Harness) -> None:
        response = await api.client.post(CLEANUP, params={"days": "36500"})

        assert response.json()["data"] == {"deleted": 0, "days": 36500}


def admit(gate: DestinationGate, destination: str) -> Claimed:
    event = make_event(destination=destination, locked_by="worker-test", claim_count=1)
    claimed = Claimed.of(event, 0.0)
    gate.admit(claimed)
    return claimed


def trip(gate: DestinationGate, destination: str, failures: int = 5) -> None:
    for _ in range(failures):
        claimed = admit(gate, destination)
        gate.finished(claimed, DeliveryOutcome.retriable("HTTP 503", 503), 0.01)


class TestDestinations:
    async def test_none_are_known_before_any_delivery(self, api: Harness) -> None:
        response = await api.client.get(DESTINATIONS)

        assert response.status_code == 200
        assert_envelope(response.json(), success=True)
        assert response.json()["data"] == []

    async def test_each_destination_shows_its_breaker_and_queues(self, api: Harness) -> None:
        gate = api.tf.dispatcher.gate
        trip(gate, "https://down.example/hook")
        admit(gate, "https://up.example/hook")

        response = await api.client.get(DESTINATIONS)

        listed = response.json()["data"]
        assert [set(d) for d in listed] == [DESTINATION_FIELDS] * 2
        down, up = listed
        assert (down["key"], down["breaker"], down["trips"]) == ("down.example:443", "OPEN", 1)
        assert down["consecutive_failures"] == 5
        # One source failed: its own breaker holds it, not the destination's.
        assert (down["breaker_for_all"], down["held_sources"]) == (False, ["tests"])
        assert (up["key"], up["breaker"], up["in_flight"]) == ("up.example:443", "CLOSED", 1)

    async def test_a_reset_closes_the_breaker(self, api: Harness) -> None:
        trip(api.tf.dispatcher.gate, "https://down.example/hook")

        response = await api.client.post(f"{DESTINATIONS}/down.example:443/reset")
        listed = await api.client.get(DESTINATIONS)

        assert response.status_code == 200, response.text
        assert_envelope(response.json(), success=True)
        state = response.json()["data"]
        assert (state["key"], state["breaker"], state["consecutive_failures"]) == (
            "down.example:443", "CLOSED", 0,
        )  # fmt: skip
        assert listed.json()["data"][0]["breaker"] == "CLOSED"

    async def test_a_key_holding_a_slash_is_reset(self, api: Harness) -> None:
        trip(api.tf.dispatcher.gate, "orders/eu")  # not a URL: keyed by type and destination

        response = await api.client.post(f"{DESTINATIONS}/http:orders/eu/reset")

        assert response.status_code == 200, response.text
        assert response.json()["data"]["key"] == "http:orders/eu"

    async def test_an_unknown_destination_answers_404(self, api: Harness) -> None:
        response = await api.client.post(f"{DESTINATIONS}/nowhere.example/reset")

        assert response.status_code == 404
        assert response.json()["error_code"] == "DESTINATION_NOT_FOUND"
        assert "nowhere.example" in response.json()["message"]


async def test_without_an_admin_facade_the_app_has_no_retention_or_destinations(
    tmp_path: Path,
) -> None:
    async with running_api(tmp_path) as api:
        bare = create_app(
            service=api.service, metrics=api.metrics, settings=ApiSettings.from_env({})
        )
        transport = httpx.ASGITransport(app=bare)
        async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
            cleanup = await client.post(CLEANUP)
            destinations = await client.get(DESTINATIONS)
            redeliver = await client.post(f"{EVENTS}/admin/redeliver", json={})
            spec = (await client.get("/openapi.json")).json()

    assert (cleanup.status_code, destinations.status_code) == (404, 404)
    assert not {CLEANUP, DESTINATIONS} & set(spec["paths"])
    # Bulk redelivery goes through the event service, which every app has.
    assert redeliver.json()["data"] == {"redelivered": 0}


BREAKERS = f"{EVENTS}/admin/breakers"


async def test_breakers_open_for_the_cluster_are_listed_counted_and_closed_for_all(
    tmp_path: Path,
) -> None:
    async with running_api(tmp_path, shared_limits=True) as api:
        await api.store.publish_breaker("hooks.example:443", open=True)

        listed = await api.client.get(BREAKERS)
        assert listed.status_code == 200, listed.text
        (row,) = listed.json()["data"]
        assert (row["key"], row["probe_by"]) == ("hooks.example:443", None)
        assert row["open_seconds"] >= 0
        await api.tf.maintenance.refresh_gauges()
        assert api.metrics.shared_breakers_open._value.get() == 1

        closed = await api.client.post(f"{BREAKERS}/hooks.example:443/close")
        assert closed.status_code == 200, closed.text
        assert await api.store.open_breakers() == []
        again = await api.client.post(f"{BREAKERS}/hooks.example:443/close")
        assert again.status_code == 404
        assert "is open for the cluster" in again.json()["message"]


async def test_a_store_that_does_not_share_breakers_lists_none(api: Harness) -> None:
    listed = await api.client.get(BREAKERS)
    assert (listed.status_code, listed.json()["data"]) == (200, [])


WORKERS = f"{EVENTS}/admin/workers"
DELIVERY_TYPES = f"{EVENTS}/admin/delivery-types"


async def test_workers_are_listed_alive_or_silent(api: Harness) -> None:
    started = datetime.now(UTC)
    await api.store.heartbeat(WorkerBeat("dispatch-1", ("dispatch",), started, 3))
    response = await api.client.get(WORKERS)
    assert response.status_code == 200, response.text
    (worker,) = response.json()["data"]
    assert (worker["worker"], worker["roles"], worker["in_flight"], worker["alive"]) == (
        "dispatch-1",
        ["dispatch"],
        3,
        True,
    )


async def test_a_silent_worker_is_listed_as_dead_beside_a_live_one() -> None:
    clock = ShiftedClock()
    store = Store(MemoryStore(clock=clock))
    await store.open()
    try:
        settings = Settings.from_env({})  # dead after 5 s of silence
        tf = bootstrap(settings, store=store, buffer=InlineIngestBuffer(store), metrics=Metrics())
        app = create_app(
            service=tf.service, metrics=tf.metrics, settings=settings.api, admin=tf.admin
        )
        await store.heartbeat(WorkerBeat("dispatch-gone", ("dispatch",), clock.now(), 4))
        await clock.advance(6)
        await store.heartbeat(WorkerBeat("dispatch-here", ("dispatch",), clock.now(), 0))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
            response = await client.get(WORKERS)
    finally:
        await store.close()
    assert response.status_code == 200, response.text
    rows = {w["worker"]: w for w in response.json()["data"]}
    assert (rows["dispatch-gone"]["alive"], rows["dispatch-here"]["alive"]) == (False, True)
    assert rows["dispatch-gone"]["silent_seconds"] >= 6.0
    assert rows["dispatch-gone"]["in_flight"] == 4  # what it held at its last heartbeat


async def test_delivery_types_show_the_loaded_ones_and_any_due_events_name(
    api: Harness,
) -> None:
    due = datetime.now(UTC) - timedelta(seconds=1)
    await api.store.insert_many(
        [
            make_event(delivery_type="http", scheduled_at=due),
            make_event(delivery_type="pigeon", destination="coop", scheduled_at=due),
            make_event(delivery_type="pigeon", destination="loft", scheduled_at=due),
        ]
    )
    response = await api.client.get(DELIVERY_TYPES)
    assert response.status_code == 200, response.text
    rows = {row["name"]: row for row in response.json()["data"]}
    assert (rows["http"]["loaded"], rows["http"]["due"]) == (True, 1)
    assert rows["pigeon"] == {
        "name": "pigeon", "loaded": False, "origin": None, "version": None, "due": 2,
    }  # fmt: skip


async def test_the_dead_after_setting_decides_who_is_dead_for_listing_and_recovery() -> None:
    clock = ShiftedClock()
    store = Store(MemoryStore(clock=clock))
    await store.open()
    try:
        settings = Settings.from_env({"TIMEFUSE_WORKER_DEAD_AFTER_SECONDS": "20"})
        tf = bootstrap(settings, store=store, buffer=InlineIngestBuffer(store), metrics=Metrics())
        (event,) = await store.insert_many([make_event(scheduled_at=clock.now())])
        await store.heartbeat(WorkerBeat("dispatch-1", ("dispatch",), clock.now(), 1))
        claimed = await claim(store, "dispatch-1", lease=600.0)
        assert [e.id for e in claimed] == [event]

        await clock.advance(10)  # silent 10 s: dead by the default 5 s, not by the setting
        assert [alive for _, alive in await tf.admin.workers()] == [True]
        assert await tf.maintenance.recover() == 0

        await clock.advance(11)
        assert [alive for _, alive in await tf.admin.workers()] == [False]
        assert await tf.maintenance.recover() == 1
    finally:
        await store.close()


def test_a_dead_after_below_two_heartbeats_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="TIMEFUSE_WORKER_DEAD_AFTER_SECONDS"):
        Settings.from_env({"TIMEFUSE_WORKER_DEAD_AFTER_SECONDS": "1"})
