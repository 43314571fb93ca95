"""``timefuse serve`` with per-event HTTP options, a PATCH and a completion callback."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.test_serve import event, submit, wait_status
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

Start = Callable[..., TimefuseProcess]

XML = '<?xml version="1.0"?>\n<order id="5"><total>1.50</total></order>'


async def test_a_patched_event_arrives_early_as_its_own_request_and_calls_back(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = event(receiver, "/orders", later, callback_url=receiver.url("/done"))
    del body["payload"]
    body["http"] = {
        "method": "PUT",
        "headers": {"X-Tenant": "acme"},
        "body": XML,
        "content_type": "application/xml",
    }
    event_id = await submit(client, tf, body)

    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    patched = await client.patch(
        f"{tf.base_url}/api/v1/events/{event_id}", json={"scheduled_at": soon, "if_version": 1}
    )
    stale = await client.patch(
        f"{tf.base_url}/api/v1/events/{event_id}", json={"max_retries": 1, "if_version": 1}
    )
    assert patched.status_code == 200, patched.text
    assert stale.status_code == 412

    assert await receiver.wait_for(lambda: bool(receiver.on("/done")), timeout=20)
    [arrival] = receiver.on("/orders")
    assert arrival.body == XML.encode()
    headers = {name.lower(): value for name, value in arrival.headers.items()}
    assert (headers["content-type"], headers["x-tenant"]) == ("application/xml", "acme")
    notice = json.loads(receiver.on("/done")[0].body)
    assert (notice["event_id"], notice["status"], notice["type"]) == (
        event_id,
        "COMPLETED",
        "event.completed",
    )
    await wait_status(client, tf, event_id, "COMPLETED", timeout=5)
    done = await client.patch(f"{tf.base_url}/api/v1/events/{event_id}", json={"max_retries": 1})
    assert done.status_code == 409
