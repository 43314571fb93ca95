"""One receiver, one set of limits, however its address is written, against a real
``timefuse serve``: respelled URLs of one receiver share its rate limit, and an override
written ``host:443`` holds for ``https://host/...`` URLs that leave the port out."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

Start = Callable[..., TimefuseProcess]
EVENTS = "/api/v1/events"
# A limit of 1 event/s with no burst: N deliveries to one receiver take at least N - 1 s.
ONE_PER_SECOND = {"rate": 1, "burst": 1}
# Arrivals a token apart may come a little closer than 1 s: the dispatcher's wake-ups and the
# receiver's clock are not the bucket's. Far more than any two spellings sharing no limit.
MIN_GAP_SECONDS = 0.7


def spellings(port: int) -> list[str]:
    """Ways to write ``http://127.0.0.1:<port>`` that a submission accepts, each reaching the
    same listener. (The legacy numeric forms, ``127.1`` or ``2130706433``, are refused when
    submitted, and a port with leading zeros too; the key would unify them anyway.)"""
    return [
        f"http://127.0.0.1:{port}",
        f"HTTP://127.0.0.1:{port}",
        f"http://[::ffff:127.0.0.1]:{port}",  # IPv4-mapped IPv6
        f"http://[::FFFF:127.0.0.1]:{port}",
        f"http://[::ffff:7f00:1]:{port}",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{port}",
        f"http://[0000:0000:0000:0000:0000:ffff:7f00:0001]:{port}",
    ]


def event(destination: str, n: int, **extra: object) -> dict[str, Any]:
    return {
        "external_job_id": f"spelling-{n}",
        "source": "respeller",
        "scheduled_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "delivery_type": "http",
        "destination": destination,
        "payload": {"n": n},
        **extra,
    }


async def submitted(client: httpx.AsyncClient, tf: TimefuseProcess, items: list[dict]) -> None:
    response = await client.post(f"{tf.base_url}{EVENTS}/batch", json={"events": items})
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["rejected_events"] == [], data["rejected_events"]


async def destinations(client: httpx.AsyncClient, tf: TimefuseProcess) -> dict[str, Any]:
    answer = await client.get(f"{tf.base_url}{EVENTS}/admin/destinations")
    assert answer.status_code == 200, answer.text
    return {row["key"]: row for row in answer.json()["data"]}


async def test_respelled_addresses_of_one_receiver_share_its_rate_limit(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    limits = {f"127.0.0.1:{receiver.port}": ONE_PER_SECOND}
    tf = timefuse({"TIMEFUSE_DESTINATION_LIMITS": json.dumps(limits)})
    urls = [f"{base}/r{n}" for n, base in enumerate(spellings(receiver.port))]

    await submitted(client, tf, [event(url, n) for n, url in enumerate(urls)])

    every = len(urls)
    assert await receiver.wait_for(lambda: len(receiver.received) >= every, timeout=every + 20), (
        tf.log()
    )
    # Each spelling reached the receiver (its own path), and only once.
    assert sorted(r.path for r in receiver.received) == sorted(f"/r{n}" for n in range(every))
    arrivals = sorted(r.at for r in receiver.received)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    print(
        f"\n{every} spellings of one receiver under 1/s: delivered over "
        f"{arrivals[-1] - arrivals[0]:.1f} s, closest two {min(gaps):.2f} s apart"
    )
    # As long as one spelling's: under limits of their own, all would arrive at once.
    assert min(gaps) >= MIN_GAP_SECONDS, gaps
    assert arrivals[-1] - arrivals[0] >= (every - 1) * 0.9
    # The dispatcher knows them as one destination, with the override's rate.
    known = await destinations(client, tf)
    assert list(known) == [f"127.0.0.1:{receiver.port}"], known
    assert known[f"127.0.0.1:{receiver.port}"]["rate"] == 1.0


async def test_an_override_for_host_443_holds_for_https_urls_without_a_port(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    # Nothing listens on 127.0.0.23:443, so each attempt is refused at once: its time is
    # the claim's, which is what the rate limit decides. (A TLS receiver on port 443 would
    # need a privileged port; the limit is kept and applied whatever the answer is.)
    host = "127.0.0.23"
    count = 5
    tf = timefuse(
        {
            "TIMEFUSE_DESTINATION_LIMITS": json.dumps({f"{host}:443": ONE_PER_SECOND}),
            "TIMEFUSE_BREAKER_FAILURES": "1000",
        }
    )
    items = [event(f"https://{host}/hook/{n}", n, max_retries=0) for n in range(count)]
    # A port of its own: no override, so no rate limit (the contrast, at the same time).
    items += [
        event(f"https://{host}:8443/hook/{n}", count + n, max_retries=0) for n in range(count)
    ]

    await submitted(client, tf, items)

    async def attempt_times(*, port_8443: bool) -> list[float]:
        listed = await client.get(
            f"{tf.base_url}{EVENTS}", params={"source": "respeller", "limit": 100}
        )
        times: list[float] = []
        for found in listed.json()["data"]["events"]:
            if (":8443/" in found["destination"]) is not port_8443:
                continue
            answer = await client.get(f"{tf.base_url}{EVENTS}/{found['id']}/attempts")
            times += [
                datetime.fromisoformat(a["started_at"]).timestamp() for a in answer.json()["data"]
            ]
        return sorted(times)

    deadline = time.monotonic() + count + 30
    while time.monotonic() < deadline:
        stats = (await client.get(f"{tf.base_url}{EVENTS}/statistics")).json()["data"]
        if stats["PENDING"] == 0 and stats["PROCESSING"] == 0:
            break
        await asyncio.sleep(0.2)
    assert (stats["PENDING"], stats["PROCESSING"]) == (0, 0), tf.log()
    limited = await attempt_times(port_8443=False)
    unlimited = await attempt_times(port_8443=True)
    assert (len(limited), len(unlimited)) == (count, count)
    gaps = [later - earlier for earlier, later in itertools.pairwise(limited)]
    print(
        f"\n{count} attempts to https://{host}/ under an override for {host}:443: over "
        f"{limited[-1] - limited[0]:.1f} s; to :8443 (no override) over "
        f"{unlimited[-1] - unlimited[0]:.1f} s"
    )
    assert min(gaps) >= MIN_GAP_SECONDS, gaps
    assert unlimited[-1] - unlimited[0] < MIN_GAP_SECONDS
    known = await destinations(client, tf)
    assert known[f"{host}:443"]["rate"] == 1.0, known
    assert known[f"{host}:8443"]["rate"] != 1.0, known
