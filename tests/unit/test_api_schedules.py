"""The /api/v1/schedules operations over the in-memory store, as a client drives them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.unit.test_api_harness import assert_envelope, bearer, error_fields
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.auth import ApiKey, KeyRing, Role, hash_key
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.testing.store_contract_support import ShiftedClock

SCHEDULES = "/api/v1/schedules"
ADMIN_KEY, BILLING_KEY, READER_KEY = "tfk_admin", "tfk_billing", "tfk_reader"
KEYS = KeyRing(
    [
        ApiKey("admin", hash_key(ADMIN_KEY), None, frozenset({Role.ADMIN})),
        ApiKey(
            "billing",
            hash_key(BILLING_KEY),
            frozenset({"billing"}),
            frozenset({Role.SUBMIT, Role.READ, Role.CANCEL}),
        ),
        ApiKey("reader", hash_key(READER_KEY), None, frozenset({Role.ADMIN}), read_only=True),
    ]
)


def schedule_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "nightly-invoices",
        "source": "billing",
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "event": {
            "delivery_type": "http",
            "destination": "https://billing.example/run",
            "payload": {"job": "invoices"},
            "max_retries": 5,
        },
    }
    body.update(overrides)
    return body


@dataclass
class Api:
    client: httpx.AsyncClient
    tf: Timefuse
    clock: ShiftedClock

    async def declare(self, api_key: str | None = ADMIN_KEY, **overrides: Any) -> httpx.Response:
        return await self.client.post(
            SCHEDULES, json=schedule_json(**overrides), headers=bearer(api_key)
        )

    async def declared(self, **overrides: Any) -> dict[str, Any]:
        response = await self.declare(**overrides)
        assert response.status_code in (200, 201), response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def call(
        self, method: str, path: str, api_key: str | None = ADMIN_KEY, **kwargs: Any
    ) -> httpx.Response:
        headers = {**bearer(api_key), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)


@asynccontextmanager
async def running(
    keys: KeyRing | None = KEYS, env: dict[str, str] | None = None
) -> AsyncIterator[Api]:
    settings = Settings.from_env(env or {})
    clock = ShiftedClock()
    store = Store(MemoryStore(clock=clock))
    await store.open()
    try:
        tf = bootstrap(
            settings, store=store, buffer=InlineIngestBuffer(store), metrics=Metrics(), clock=clock
        )
        app = create_app(
            service=tf.service,
            metrics=tf.metrics,
            settings=settings.api,
            keys=keys,
            schedules=tf.schedules,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
            yield Api(client, tf, clock)
    finally:
        await store.close()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running() as harness:
        yield harness


def _misspelt_template() -> dict[str, Any]:
    event = dict(schedule_json()["event"])
    del event["max_retries"]
    return {**event, "max_retry": 5}


async def test_an_unknown_field_of_the_event_template_is_named_in_the_warnings(
    api: Api,
) -> None:
    declared = await api.declare(event=_misspelt_template())
    schedule_id = declared.json()["data"]["id"]
    changed = await api.call(
        "PATCH", f"{SCHEDULES}/{schedule_id}", json={"event": {**_misspelt_template(), "x": 1}}
    )
    read = await api.call("GET", f"{SCHEDULES}/{schedule_id}")

    assert declared.status_code == 201, declared.text
    (warning,) = declared.json()["data"]["warnings"]
    assert warning["field"] == "event.max_retry"
    assert "did you mean max_retries?" in warning["message"]
    assert "max_retry" not in declared.json()["data"]["event"]
    assert "max_retries" not in declared.json()["data"]["event"]  # the default applies
    assert changed.status_code == 200, changed.text
    fields = [w["field"] for w in changed.json()["data"]["warnings"]]
    assert fields == ["event.max_retry", "event.x"]
    assert "warnings" not in read.json()["data"]


async def test_an_unknown_field_of_the_event_template_can_be_refused() -> None:
    async with running(env={"TIMEFUSE_UNKNOWN_FIELDS": "reject"}) as api:
        refused = await api.declare(event=_misspelt_template())
        declared = await api.declared()
        changed = await api.call(
            "PATCH", f"{SCHEDULES}/{declared['id']}", json={"event": _misspelt_template()}
        )
        listed = await api.call("GET", SCHEDULES)

    assert refused.status_code == 422
    assert error_fields(refused) == {"event.max_retry"}
    assert changed.status_code == 422
    assert error_fields(changed) == {"event.max_retry"}
    (kept,) = listed.json()["data"]["schedules"]
    assert kept["event"]["max_retries"] == 5


async def test_a_declaration_creates_then_replaces_by_key(api: Api) -> None:
    created = await api.declare()
    assert created.status_code == 201
    body = created.json()
    assert_envelope(body, success=True)
    data = body["data"]
    assert created.headers["location"] == f"{SCHEDULES}/{data['id']}"
    assert (data["key"], data["source"], data["state"], data["missed_runs"]) == (
        "nightly-invoices",
        "billing",
        "ACTIVE",
        "once",
    )
    assert data["event"]["payload"] == {"job": "invoices"}
    assert data["event"]["max_retries"] == 5
    again = await api.declare()
    assert (again.status_code, again.json()["message"]) == (200, "schedule unchanged")
    assert again.json()["data"]["version"] == data["version"]
    changed = await api.declare(cron="30 3 * * *")
    assert (changed.status_code, changed.json()["message"]) == (200, "schedule updated")
    assert changed.json()["data"]["id"] == data["id"]
    assert changed.json()["data"]["cron"] == "30 3 * * *"
    listed = await api.call("GET", SCHEDULES)
    assert [s["id"] for s in listed.json()["data"]["schedules"]] == [data["id"]]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"start_at": "2031-01-02T00:00:00Z", "end_at": "2031-01-01T00:00:00Z"}, "end_at"),
        ({"cron": None, "every_seconds": 0}, "every_seconds"),
        ({"cron": None, "every_seconds": 0.5}, "every_seconds"),
        ({"missed_runs": "sometimes"}, "missed_runs"),
        ({"key": "no spaces"}, "key"),
        ({"event": None}, "event"),
        ({"event": [1, 2]}, "event"),
        ({"event": {"delivery_type": "http", "payload": {}}}, "event.destination"),
        (
            {"event": {"delivery_type": "http", "destination": "ftp://x", "payload": 1}},
            "event.destination",
        ),
        (
            {"event": {"delivery_type": "carrier-pigeon", "destination": "x", "payload": 1}},
            "event.delivery_type",
        ),
        (
            {"event": {**schedule_json()["event"], "scheduled_at": "2031-01-01T00:00:00Z"}},
            "event.scheduled_at",
        ),
        ({"event": {**schedule_json()["event"], "max_retries": 11}}, "event.max_retries"),
        ({"every_second": 5}, "every_second"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    api: Api, overrides: dict[str, Any], field: str
) -> None:
    response = await api.declare(**overrides)
    assert response.status_code == 422, response.text
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert field in error_fields(response)
    assert (await api.call("GET", SCHEDULES)).json()["data"]["schedules"] == []


async def test_every_bad_field_is_named_at_once(api: Api) -> None:
    response = await api.declare(
        cron="nope", timezone="Nowhere/Land", event={"delivery_type": "http", "payload": 1}
    )
    assert response.status_code == 422
    assert {"cron", "timezone", "event.destination"} <= error_fields(response)


async def test_malformed_json_and_wrong_media_type_answer_as_for_events(api: Api) -> None:
    response = await api.call(
        "POST", SCHEDULES, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error_code"]) == (400, "MALFORMED_JSON")
    response = await api.call("POST", SCHEDULES, content=b"{}", headers={"content-type": "text/x"})
    assert response.status_code == 415


async def test_a_schedule_reads_back_with_its_next_instants(api: Api) -> None:
    data = await api.declared(cron="0 9 * * MON-FRI", timezone="America/New_York")
    response = await api.call("GET", f"{SCHEDULES}/{data['id']}", params={"count": 3})
    runs = response.json()["data"]["next_runs"]
    assert len(runs) == 3
    for text in runs:
        assert text.endswith("Z")
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
        local = instant.astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert runs == sorted(runs)
    assert (await api.call("GET", f"{SCHEDULES}/{data['id']}")).json()["data"]["next_runs"]
    bad = await api.call("GET", f"{SCHEDULES}/{data['id']}", params={"count": 101})
    assert (bad.status_code, error_fields(bad)) == (400, {"count"})


async def test_listing_pages_and_filters(api: Api) -> None:
    for n in range(5):
        await api.declared(key=f"k{n}")
    await api.declared(key="other", source="shipping", paused=True)
    pages: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.call("GET", SCHEDULES, params=params)).json()["data"]
        pages.extend(f"{s['source']}/{s['key']}" for s in page["schedules"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [*(f"billing/k{n}" for n in range(5)), "shipping/other"]
    paused = await api.call("GET", SCHEDULES, params={"state": "paused"})
    assert [s["key"] for s in paused.json()["data"]["schedules"]] == ["other"]
    billing = await api.call("GET", SCHEDULES, params={"source": "billing", "limit": 100})
    assert len(billing.json()["data"]["schedules"]) == 5
    for params in (
        {"state": "asleep"},
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"limit": "0"},
        {"source": "bill\x00ing"},
        {"source": "billing\n"},
        {"source": " "},
    ):
        response = await api.call("GET", SCHEDULES, params=params)
        assert (response.status_code, error_fields(response)) == (400, set(params))
        assert "source" not in params or "source" in response.json()["message"]


async def test_patch_pause_resume_and_delete(api: Api) -> None:
    data = await api.declared()
    by_id = f"{SCHEDULES}/{data['id']}"
    patched = await api.call("PATCH", by_id, json={"cron": None, "every_seconds": 3600})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["data"]["cron"], patched.json()["data"]["every_seconds"]) == (
        None,
        3600,
    )
    refused = await api.call("PATCH", by_id, json={"every_seconds": 0, "timezone": "Nowhere"})
    assert refused.status_code == 422
    assert error_fields(refused) == {"every_seconds", "timezone"}
    renamed = await api.call("PATCH", by_id, json={"key": "renamed"})
    assert (renamed.status_code, error_fields(renamed)) == (422, {"key"})
    assert renamed.json()["errors"][0]["message"] == "can't be changed"
    template = await api.call(
        "PATCH", by_id, json={"event": {"delivery_type": "http", "destination": "x"}}
    )
    assert (template.status_code, error_fields(template)) == (422, {"event.payload"})
    paused = await api.call("POST", f"{by_id}/pause")
    assert paused.json()["data"]["state"] == "PAUSED"
    resumed = await api.call("POST", f"{by_id}/resume")
    assert resumed.json()["data"]["state"] == "ACTIVE"
    deleted = await api.call("DELETE", by_id)
    assert deleted.json()["data"] == {"id": data["id"], "deleted": True}
    for method, path in (("GET", by_id), ("DELETE", by_id), ("POST", f"{by_id}/pause")):
        response = await api.call(method, path)
        assert (response.status_code, response.json()["error_code"]) == (
            404,
            "SCHEDULE_NOT_FOUND",
        )
    malformed = await api.call("GET", f"{SCHEDULES}/not-a-uuid")
    assert (malformed.status_code, malformed.json()["error_code"]) == (400, "INVALID_SCHEDULE_ID")


async def test_occurrences_are_events_listed_newest_first_with_their_statuses(api: Api) -> None:
    data = await api.declared(cron=None, every_seconds=60, max_runs=3, missed_runs="all")
    triggered = await api.call("POST", f"{SCHEDULES}/{data['id']}/trigger")
    assert triggered.status_code == 202
    event = triggered.json()["data"]
    assert (event["source"], event["status"]) == ("billing", "PENDING")
    assert event["external_job_id"].startswith("schedule:nightly-invoices:")
    assert event["payload"] == {"job": "invoices"}
    # Five minutes later (the store's and the planner's clock), one tick of the planner:
    # four instants were missed, of which "all" keeps as many as max_runs leaves.
    await api.clock.advance(300)
    assert api.tf.planner is not None
    assert await api.tf.planner.run_once() == 3
    listing = await api.call("GET", f"{SCHEDULES}/{data['id']}/events", params={"limit": 2})
    page = listing.json()["data"]
    older = await api.call(
        "GET",
        f"{SCHEDULES}/{data['id']}/events",
        params={"limit": 2, "cursor": page["next_cursor"]},
    )
    events = page["events"] + older.json()["data"]["events"]
    assert older.json()["data"]["next_cursor"] is None
    times = [e["scheduled_at"] for e in events]
    assert times == sorted(times, reverse=True)
    assert len(events) == 4
    assert events[-1]["id"] == event["id"]
    assert {e["status"] for e in events} == {"PENDING"}
    after = (await api.call("GET", f"{SCHEDULES}/{data['id']}")).json()["data"]
    assert (after["runs"], after["state"], after["next_runs"]) == (3, "ENDED", [])
    # Occurrences are ordinary events: cancelled through the events API like any other.
    cancelled = await api.call("DELETE", f"/api/v1/events/{events[0]['id']}")
    assert cancelled.json()["data"]["status"] == "CANCELLED"


async def test_a_key_scoped_to_sources_sees_and_changes_only_theirs(api: Api) -> None:
    theirs = await api.declared(key="ship", source="shipping")
    mine = await api.declare(BILLING_KEY)
    assert mine.status_code == 201
    forbidden = await api.declare(BILLING_KEY, key="x", source="shipping")
    assert (forbidden.status_code, error_fields(forbidden)) == (403, {"source"})
    listed = await api.call("GET", SCHEDULES, BILLING_KEY)
    assert [s["source"] for s in listed.json()["data"]["schedules"]] == ["billing"]
    other = f"{SCHEDULES}/{theirs['id']}"
    for method, path in (
        ("GET", other),
        ("PATCH", other),
        ("DELETE", other),
        ("POST", f"{other}/pause"),
        ("POST", f"{other}/trigger"),
        ("GET", f"{other}/events"),
    ):
        kwargs: dict[str, Any] = {"json": {"max_runs": 3}} if method == "PATCH" else {}
        response = await api.call(method, path, BILLING_KEY, **kwargs)
        assert response.status_code == 404, (method, path)
    read_only = await api.declare(READER_KEY)
    assert read_only.status_code == 403
    assert (await api.call("GET", other, READER_KEY)).status_code == 200
    assert (await api.call("GET", SCHEDULES, None)).status_code == 401


async def test_an_openapi_description_covers_every_schedule_operation(api: Api) -> None:
    spec = (await api.call("GET", "/openapi.json")).json()
    paths = spec["paths"]
    by_id = f"{SCHEDULES}/{{schedule_id}}"
    assert set(paths[SCHEDULES]) == {"get", "post"}
    assert set(paths[by_id]) == {"get", "patch", "delete"}
    for action in ("pause", "resume", "trigger", "events"):
        assert f"{by_id}/{action}" in paths
    post = paths[SCHEDULES]["post"]
    assert {"200", "201", "422"} <= set(post["responses"])
    assert post["requestBody"]["content"]["application/json"]["schema"]
