"""Signing keys rotated through the admin API of ``timefuse api`` sign the deliveries of a
separate ``timefuse dispatch`` process that shares the keyring file, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from tests.support.process import TimefuseProcess
from tests.support.receiver import Received, Receiver
from timefuse.service.store import Store

pytestmark = pytest.mark.postgres

Start = Callable[..., TimefuseProcess]
EVENTS = "/api/v1/events"
KEYS = f"{EVENTS}/admin/signing-keys"
# The documented bound: every process re-reads a changed keyring within a second. An event due
# this long after a change is signed by a process that has read it.
AFTER_A_CHANGE = timedelta(seconds=1.5)


async def until_heard_of(store: Store, worker: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while worker not in {w.worker for w in await store.workers()}:
        assert time.monotonic() < deadline, f"{worker} did not start"
        await asyncio.sleep(0.2)


class Rotation:
    """The API of one process, and deliveries made by another."""

    def __init__(self, api: httpx.AsyncClient, receiver: Receiver) -> None:
        self.api = api
        self.receiver = receiver
        self.sent = 0

    async def add_key(self) -> dict[str, Any]:
        response = await self.api.post(KEYS, json={"source": "billing"})
        assert response.status_code == 201, response.text
        key: dict[str, Any] = response.json()["data"]
        return key

    async def retire(self, key: dict[str, Any]) -> None:
        response = await self.api.delete(f"{KEYS}/{key['id']}")
        assert response.status_code == 200, response.text

    async def delivered_after_the_change(self) -> Received:
        """An event submitted now, due once every process has read the change; as it arrived."""
        self.sent += 1
        path = f"/hook/{self.sent}"
        event = {
            "external_job_id": f"rotation-{self.sent}",
            "source": "billing",
            "scheduled_at": (datetime.now(UTC) + AFTER_A_CHANGE).isoformat(),
            "delivery_type": "http",
            "destination": self.receiver.url(path),
            "payload": {"n": self.sent},
        }
        response = await self.api.post(EVENTS, json=event)
        assert response.status_code == 202, response.text
        assert await self.receiver.wait_for(lambda: bool(self.receiver.on(path)), timeout=30)
        [arrival] = self.receiver.on(path)
        return arrival


def verifies(key: dict[str, Any], arrival: Received) -> bool:
    try:
        standardwebhooks.Webhook(key["secret"]).verify(arrival.body, arrival.headers)
    except standardwebhooks.webhooks.WebhookVerificationError:
        return False
    return True


async def test_keys_rotated_through_the_api_sign_a_separate_dispatchers_deliveries(
    store: Store, receiver: Receiver, processes: Start, postgres_dsn: str, tmp_path: Path
) -> None:
    shared = {
        "DATABASE_URL": postgres_dsn,
        "TIMEFUSE_SIGNING_KEYS_FILE": str(tmp_path / "keys" / "signing-keys.json"),
    }
    api = processes(shared, command="api")
    processes({**shared, "TIMEFUSE_WORKER_ID": "signer"}, command="dispatch")
    await until_heard_of(store, "signer")

    async with httpx.AsyncClient(base_url=api.base_url, timeout=10.0) as client:
        rotation = Rotation(client, receiver)
        unsigned = await rotation.delivered_after_the_change()
        old = await rotation.add_key()
        signed_old = await rotation.delivered_after_the_change()
        new = await rotation.add_key()
        overlap = await rotation.delivered_after_the_change()
        await rotation.retire(old)
        signed_new = await rotation.delivered_after_the_change()

    assert "webhook-signature" not in unsigned.headers  # no key yet: not signed
    assert [verifies(old, arrival) for arrival in (signed_old, overlap, signed_new)] == [
        True,
        True,
        False,
    ]
    assert [verifies(new, arrival) for arrival in (signed_old, overlap, signed_new)] == [
        False,
        True,
        True,
    ]
    # During the overlap the one delivery carries both signatures.
    assert len(overlap.headers["webhook-signature"].split()) == 2
