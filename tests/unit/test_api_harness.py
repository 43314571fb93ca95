"""Shared wiring for the REST API tests: the real app over the in-memory store.

It lives in a ``test_api_*`` module because the API's tests own only those names; the other
``test_api_*`` modules import :func:`running_api` from here. Its own tests check the wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap
from timefuse.plugins.http_settings import HttpSettings
from timefuse.ports.ingest import BufferUnavailable, IngestBuffer
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import claim, seed

EVENTS = "/api/v1/events"
ENVELOPE_KEYS = {"success", "data", "message", "error_code", "errors", "timestamp"}


@dataclass
class Harness:
    client: httpx.AsyncClient
    store: Store
    service: EventService
    metrics: Metrics
    app: Starlette
    tf: Timefuse

    @property
    def memory(self) -> MemoryStore:
        """The in-memory adapter behind the store (its faults make calls fail)."""
        adapter = self.store.adapter
        assert isinstance(adapter, MemoryStore)
        return adapter

    async def submit(self, key: str | None = None, **overrides: Any) -> httpx.Response:
        return await self.client.post(EVENTS, json=event_json(**overrides), headers=bearer(key))

    async def submitted_id(self, key: str | None = None, **overrides: Any) -> str:
        response = await self.submit(key, **overrides)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["data"]["id"]
        return event_id

    async def attempted(
        self, status: EventStatus, event_id: str | None = None, **overrides: Any
    ) -> str:
        """Make one attempt on an event, leaving it in ``status``; its id.

        Without ``event_id``, a new event (``overrides`` its fields) is stored first, by
        default scheduled a day ago so that it is claimed before any other due event. A
        PENDING outcome is a retry due at once.
        """
        if event_id is None:
            overrides.setdefault("scheduled_at", datetime.now(UTC) - timedelta(days=1))
            event = make_event(**overrides)
            await seed(self.store, event)
            event_id = event.id
        claimed = await claim(self.store, "worker-test", 1, 60.0)
        assert [event.id for event in claimed] == [event_id]
        retry = {"retry_delay_seconds": 0.0} if status is EventStatus.PENDING else {}
        outcome = make_outcome(claimed[0], "worker-test", status, **retry)
        assert await self.store.record_outcomes([outcome]) == {event_id}
        return event_id


def bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key is not None else {}


class FailingBuffer:
    """An ingest buffer whose backend is down: every submit fails."""

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        raise BufferUnavailable("broker unreachable")

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        raise BufferUnavailable("broker unreachable")


def at(seconds: float) -> str:
    """An ISO-8601 instant ``seconds`` from now (negative: in the past)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def event_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": at(3600),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": {"invoice": "INV-1", "lines": [1, 2]},
        "max_retries": 3,
    }
    body.update(overrides)
    return body


def assert_envelope(body: dict[str, Any], *, success: bool) -> None:
    assert set(body) == ENVELOPE_KEYS
    assert body["success"] is success
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0)


def error_fields(response: httpx.Response) -> set[str]:
    return {error["field"] for error in response.json()["errors"]}


@asynccontextmanager
async def running_api(
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    buffer: Callable[[Store], IngestBuffer] = InlineIngestBuffer,
    readiness: Callable[[], Awaitable[dict[str, str]]] | None = None,
    plugins: tuple[object, ...] = (),
    shared_limits: bool = False,
) -> AsyncIterator[Harness]:
    settings = Settings.from_env(env or {})
    store = Store(MemoryStore(shared_limits=shared_limits))
    await store.open()
    try:
        # The composition root builds the service, so its limits come from the settings
        # exactly as in a running process.
        tf = bootstrap(
            settings, store=store, buffer=buffer(store), metrics=Metrics(), extra_plugins=plugins
        )
        metrics, service = tf.metrics, tf.service
        app = create_app(
            service=service,
            metrics=metrics,
            settings=settings.api,
            http_settings=tf.plugins.section(HttpSettings),
            readiness=readiness,
            admin=tf.admin,
            registry=tf.registry,  # as a running process passes them: the console lists them
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
            yield Harness(client, store, service, metrics, app, tf)
    finally:
        await store.close()


async def test_the_harness_serves_the_api_over_a_real_store(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        event_id = await api.submitted_id()
        stored = await api.store.get(event_id)
    assert stored is not None
    assert stored.external_job_id == "job-1"
