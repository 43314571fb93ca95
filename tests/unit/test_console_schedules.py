"""The console's schedules pages and actions, without a browser, over the in-memory store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.unit.test_api_harness import bearer
from tests.unit.test_api_schedules import (
    ADMIN_KEY,
    BILLING_KEY,
    KEYS,
    READER_KEY,
    SCHEDULES,
    schedule_json,
)
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import bootstrap
from timefuse.entrypoints.ui.render import period
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.testing.store_contract_support import ShiftedClock

SECRET = "s" * 40


@dataclass
class Console:
    transport: httpx.ASGITransport
    store: Store

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url="http://timefuse")

    async def declared(self, **overrides: Any) -> dict[str, Any]:
        async with self.client() as client:
            response = await client.post(
                SCHEDULES, json=schedule_json(**overrides), headers=bearer(ADMIN_KEY)
            )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    settings = Settings.from_env({"TIMEFUSE_UI_SECRET": SECRET})
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
            keys=KEYS,
            schedules=tf.schedules,
        )
        yield Console(httpx.ASGITransport(app=app), store)
    finally:
        await store.close()


@asynccontextmanager
async def signed_in(console: Console, key: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A visitor signed in with ``key``, and the CSRF token of its session."""
    async with console.client() as client:
        page = await client.get("/ui/login")
        token = _csrf(page.text)
        done = await client.post("/ui/login", data={"csrf": token, "key": key, "next": "/ui/"})
        assert done.status_code == 303
        again = await client.get("/ui/schedules")
        yield client, _csrf(again.text)


def _csrf(html: str) -> str:
    return html.split('name="csrf-token" content="')[1].split('"')[0]


def _keys_listed(html: str) -> list[str]:
    return re.findall(r'<td data-label="Key"><a href="/ui/schedules/[^"]+">([^<]+)</a>', html)


async def test_the_list_shows_each_schedule_with_its_state_and_next_run(
    console: Console,
) -> None:
    await console.declared(key="nightly", cron="0 2 * * *")
    paused = await console.declared(key="hourly", cron=None, every_seconds=3600)
    await console.declared(key="reports", source="reports")
    async with signed_in(console, ADMIN_KEY) as (client, csrf):
        await client.post(f"/ui/schedules/{paused['id']}/pause", data={"csrf": csrf})

        page = await client.get("/ui/schedules")
        only_paused = await client.get("/ui/schedules?state=PAUSED")
        only_reports = await client.get("/ui/schedules?source=reports")

    assert page.status_code == 200
    assert _keys_listed(page.text) == ["hourly", "nightly", "reports"]
    assert 'class="badge state-paused">PAUSED' in page.text
    assert "<code>0 2 * * *</code>" in page.text
    assert 'every 1 h <span class="muted">(Europe/Berlin)</span>' in page.text
    assert _keys_listed(only_paused.text) == ["hourly"]
    assert _keys_listed(only_reports.text) == ["reports"]


async def test_a_bad_state_or_cursor_is_named_on_the_page_not_a_500(console: Console) -> None:
    async with signed_in(console, ADMIN_KEY) as (client, _):
        state = await client.get("/ui/schedules?state=SLEEPING")
        cursor = await client.get("/ui/schedules?cursor=not-a-cursor")
        bad_id = await client.get("/ui/schedules/not-a-uuid")

    assert state.status_code == 400
    assert "unknown state" in state.text
    assert cursor.status_code == 400
    assert "page link is broken" in cursor.text
    assert bad_id.status_code == 404


async def test_pause_resume_and_trigger_from_the_schedules_page(console: Console) -> None:
    declared = await console.declared()
    schedule_id = declared["id"]
    async with signed_in(console, ADMIN_KEY) as (client, csrf):
        paused = await client.post(f"/ui/schedules/{schedule_id}/pause", data={"csrf": csrf})
        page_paused = await client.get(paused.headers["location"])
        resumed = await client.post(f"/ui/schedules/{schedule_id}/resume", data={"csrf": csrf})
        triggered = await client.post(f"/ui/schedules/{schedule_id}/trigger", data={"csrf": csrf})
        page = await client.get(triggered.headers["location"])
        occurrence_id = page.text.split('<td data-label="External id"><a href="/ui/events/')[1][:36]
        occurrence_page = await client.get(f"/ui/events/{occurrence_id}")
        api = await client.get(f"{SCHEDULES}/{schedule_id}", headers=bearer(ADMIN_KEY))
        occurrences = await client.get(
            f"{SCHEDULES}/{schedule_id}/events", headers=bearer(ADMIN_KEY)
        )

    assert paused.status_code == 303
    assert "Schedule paused" in page_paused.text
    assert ">Resume</button>" in page_paused.text
    assert resumed.headers["location"] == f"/ui/schedules/{schedule_id}?done=schedule-resumed"
    assert api.json()["data"]["state"] == "ACTIVE"
    assert occurrences.status_code == 200, occurrences.text
    created = occurrences.json()["data"]["events"]
    assert len(created) == 1
    assert "Occurrence created" in page.text
    # The occurrence is listed on the schedule's page, linking to its event.
    assert f'href="/ui/events/{created[0]["id"]}"' in page.text
    assert "triggered</span>" in page.text
    # Resumed: the page offers to pause it again.
    assert ">Pause</button>" in page.text
    # Each action is listed with the key that took it; the occurrence links back.
    for done in ("pause schedule</strong> by admin (paused)",
                 "resume schedule</strong> by admin (active)",
                 f"trigger schedule</strong> by admin (event {created[0]['id']})"):  # fmt: skip
        assert done in page.text
    assert f'href="/ui/schedules/{schedule_id}"' in occurrence_page.text


async def test_a_read_only_key_sees_schedules_but_no_action_and_is_refused_when_it_acts(
    console: Console,
) -> None:
    declared = await console.declared()
    async with signed_in(console, READER_KEY) as (client, csrf):
        page = await client.get(f"/ui/schedules/{declared['id']}")
        refused = await client.post(f"/ui/schedules/{declared['id']}/pause", data={"csrf": csrf})
        api = await client.get(f"{SCHEDULES}/{declared['id']}", headers=bearer(ADMIN_KEY))

    assert page.status_code == 200
    assert "nightly-invoices" in page.text
    assert "<button" not in page.text.split("<main", 1)[1]
    assert refused.status_code == 403
    assert api.json()["data"]["state"] == "ACTIVE"


async def test_a_source_scoped_key_neither_sees_nor_changes_another_sources_schedule(
    console: Console,
) -> None:
    own = await console.declared(key="own")
    other = await console.declared(key="other", source="reports")
    async with signed_in(console, BILLING_KEY) as (client, csrf):
        listed = await client.get("/ui/schedules")
        asked = await client.get("/ui/schedules?source=reports")
        page = await client.get(f"/ui/schedules/{other['id']}")
        paused = await client.post(f"/ui/schedules/{other['id']}/pause", data={"csrf": csrf})
        triggered = await client.post(f"/ui/schedules/{other['id']}/trigger", data={"csrf": csrf})
        own_page = await client.get(f"/ui/schedules/{own['id']}")
        api = await client.get(f"{SCHEDULES}/{other['id']}", headers=bearer(ADMIN_KEY))
        occurrences = await client.get(
            f"{SCHEDULES}/{other['id']}/events", headers=bearer(ADMIN_KEY)
        )

    assert _keys_listed(listed.text) == ["own"]
    assert _keys_listed(asked.text) == []
    assert page.status_code == 404
    assert paused.status_code == 404
    assert triggered.status_code == 404
    assert own_page.status_code == 200
    assert api.json()["data"]["state"] == "ACTIVE"
    assert occurrences.json()["data"]["events"] == []


async def test_an_action_without_the_csrf_token_changes_nothing(console: Console) -> None:
    declared = await console.declared()
    async with signed_in(console, ADMIN_KEY) as (client, _):
        refused = await client.post(f"/ui/schedules/{declared['id']}/pause", data={"csrf": "x"})
        api = await client.get(f"{SCHEDULES}/{declared['id']}", headers=bearer(ADMIN_KEY))

    assert refused.status_code == 403
    assert api.json()["data"]["state"] == "ACTIVE"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(90, "1 min 30 s"), (900, "15 min"), (3600, "1 h"), (5400, "1 h 30 min"), (172800, "2 d")],
)
def test_an_interval_is_shown_in_its_whole_units(seconds: int, shown: str) -> None:
    assert period(seconds) == shown
