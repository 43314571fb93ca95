"""``timefuse serve`` with per-event HTTP options, a PATCH and a signed completion callback."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import standardwebhooks

from tests.e2e.test_serve import event, submit, wait_status
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

Start = Callable[..., TimefuseProcess]

XML = '<?xml version="1.0"?>\n<order id="5"><total>1.50</total></order>'

# The signing secret of the events' source ("e2e"), as its receivers hold it.
SECRET = "whsec_" + base64.b64encode(b"request control e2e secret, 32 b").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a secret timefuse never held, 32").decode()


async def test_a_patched_event_arrives_early_as_its_own_request_and_calls_back_signed(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"TIMEFUSE_WEBHOOK_SECRETS": json.dumps({"e2e": [SECRET]})})
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
    # Both the event and its callback verify with the source's secret, checked by the
    # reference library (it raises on a missing or wrong signature).
    webhook = standardwebhooks.Webhook(SECRET)
    webhook.verify(arrival.body, arrival.headers, json_parse=False)
    [callback] = receiver.on("/done")
    notice = webhook.verify(callback.body, callback.headers)
    assert callback.event_id not in ("", event_id)  # the callback is an event of its own
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OTHER_SECRET).verify(callback.body, callback.headers)
    assert (notice["event_id"], notice["status"], notice["type"]) == (
        event_id,
        "COMPLETED",
        "event.completed",
    )
    await wait_status(client, tf, event_id, "COMPLETED", timeout=5)
    done = await client.patch(f"{tf.base_url}/api/v1/events/{event_id}", json={"max_retries": 1})
    assert done.status_code == 409
