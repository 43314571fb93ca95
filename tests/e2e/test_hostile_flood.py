"""A flood of hostile requests with valid ones mixed in, against a real `timefuse serve`.

1,600 malformed requests (100 of each of 16 kinds: bad JSON, wrong types, oversized and deeply
nested bodies, wrong content types, random paths and methods, missing or bad keys, ...) are
shuffled with 160 valid submissions and sent with bounded concurrency. Every valid one must be
accepted and delivered, nothing may answer 5xx, and the process must stay up with bounded memory.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver
from timefuse.entrypoints.auth import hash_key

Start = Callable[..., TimefuseProcess]

KEY = "tfk_flood_submitter"
MAX_BODY = 32_768
MALFORMED = 1_600
VALID = 160
CONCURRENCY = 64
# Generous: the point is that memory doesn't grow with what the flood sends (~8 MB of it).
RSS_BOUND_KB = 300 * 1024
EVENTS = "/api/v1/events"


@dataclass(frozen=True)
class Shot:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A valid event's body is made when it is sent, so its scheduled_at is still ahead.
    valid: Callable[[], bytes] | None = None


def auth(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}", "content-type": "application/json", **extra}


def event(receiver: Receiver, n: int, **extra: object) -> dict[str, object]:
    return {
        "external_job_id": f"flood-{n}",
        "source": "flood",
        "scheduled_at": (datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
        "delivery_type": "http",
        "destination": receiver.url("/flood"),
        "payload": {"n": n},
        **extra,
    }


def valid(receiver: Receiver, n: int) -> Callable[[], bytes]:
    return lambda: json.dumps(event(receiver, n)).encode()


def malformed(rng: random.Random, receiver: Receiver, n: int) -> Shot:
    good = event(receiver, -n)
    kind = n % 16
    if kind == 0:
        body = rng.choice([b'{"source": ', b"{,}", b"nul", b"[1,]", b'{"a":"\\x"}', b"\x00" * 9])
        return Shot("POST", EVENTS, body, auth())
    if kind == 1:
        wrong = {"source": 42, "max_retries": "three", "payload": None, "scheduled_at": 7}
        field_ = rng.choice(list(wrong))
        return Shot("POST", EVENTS, json.dumps({**good, field_: wrong[field_]}).encode(), auth())
    if kind == 2:
        size = rng.randint(MAX_BODY + 1, 2 * MAX_BODY)
        return Shot("POST", EVENTS, b'{"payload": "' + b"x" * size + b'"}', auth())
    if kind == 3:
        depth = rng.choice([100, 1_000, 10_000])
        return Shot("POST", EVENTS, b"[" * depth + b"]" * depth, auth())
    if kind == 4:
        deep = json.dumps({**good, "payload": 0}).replace("0}", "[" * 5000 + "]" * 5000 + "}")
        return Shot("POST", f"{EVENTS}/batch", b'{"events": [' + deep.encode() + b"]}", auth())
    if kind == 5:
        content_type = rng.choice(["text/plain", "application/xml", "multipart/form-data", ""])
        return Shot(
            "POST", EVENTS, json.dumps(good).encode(), auth(**{"content-type": content_type})
        )
    if kind == 6:
        junk = "".join(rng.choice("abz09-_.~%/") for _ in range(rng.randint(1, 40)))
        method = rng.choice(["GET", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"])
        return Shot(method, f"/{junk}", None, auth())
    if kind == 7:
        return Shot("POST", EVENTS, json.dumps(good).encode(), {"content-type": "application/json"})
    if kind == 8:
        bad = rng.choice(["Bearer wrong", "Basic Zm9vOmJhcg==", "Bearer " + "k" * 4000])
        headers = {"authorization": bad, "content-type": "application/json"}
        return Shot("POST", EVENTS, json.dumps(good).encode(), headers)
    if kind == 9:
        return Shot("POST", f"{EVENTS}/batch", b'{"events": [' + b"{}," * 5000 + b"{}]}", auth())
    if kind == 10:
        return Shot("POST", EVENTS, b'{"source": "\xff\xfe"}', auth())
    if kind == 11:
        external = rng.choice(["%00", "a%1Bb", "x" * 300, "%E2%80%8B"])
        return Shot(rng.choice(["GET", "DELETE"]), f"{EVENTS}/external/{external}", None, auth())
    if kind == 12:
        return Shot("GET", f"{EVENTS}/{rng.choice(['42', 'not-a-uuid', '%00'])}", None, auth())
    if kind == 13:
        foreign = {**good, "source": "someone-else"}
        return Shot("POST", EVENTS, json.dumps(foreign).encode(), auth())
    if kind == 14:
        items = [1, "x", None, [], {**good, "max_retries": 99}]
        return Shot("POST", f"{EVENTS}/batch", json.dumps({"events": items}).encode(), auth())
    past = {**good, "scheduled_at": "2001-01-01T00:00:00Z", "delivery_type": "pigeon"}
    return Shot("POST", EVENTS, json.dumps(past).encode(), auth())


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def fire(
    client: httpx.AsyncClient, base: str, shots: list[Shot]
) -> tuple[Counter[int], list[str]]:
    """Send ``shots`` from CONCURRENCY workers; check each answer as it comes."""
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    queue = iter(shots)

    async def worker() -> None:
        for shot in queue:
            body = shot.valid() if shot.valid is not None else shot.body
            response = await client.request(
                shot.method, base + shot.path, content=body, headers=shot.headers
            )
            statuses[response.status_code] += 1
            if shot.valid is not None:
                assert response.status_code == 202, response.text
                accepted.append(response.json()["data"]["id"])
            else:
                assert 400 <= response.status_code < 500, (shot.method, shot.path, response.text)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses, accepted


async def test_a_flood_of_malformed_requests_leaves_the_valid_ones_delivered(
    timefuse: Start, receiver: Receiver, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "flood"\nsha256 = "{hash_key(KEY)}"\nsources = ["flood"]\n'
        'roles = ["submit", "read"]\n'
    )
    tf = timefuse(
        {
            "TIMEFUSE_API_KEYS_FILE": str(keys),
            "TIMEFUSE_MAX_BODY_BYTES": str(MAX_BODY),
            # A valid body is made just before it is sent, due 3 s later; on a loaded machine
            # the flood can hold it in the server's queue past that: not what this is about.
            "TIMEFUSE_PAST_GRACE_SECONDS": "120",
        }
    )
    assert tf.proc is not None
    rng = random.Random(20260601)
    shots = [malformed(rng, receiver, n) for n in range(MALFORMED)]
    shots += [Shot("POST", EVENTS, None, auth(), valid(receiver, n)) for n in range(VALID)]
    rng.shuffle(shots)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        # Warm up first, so "before" is the steady footprint, not an idle interpreter's.
        await fire(client, tf.base_url, shots[:200])
        before = rss_kb(tf.proc.pid)
        started = time.monotonic()
        statuses, accepted = await fire(client, tf.base_url, shots[200:])
        elapsed = time.monotonic() - started
        after = rss_kb(tf.proc.pid)
        ready = await client.get(f"{tf.base_url}/health/ready")

    valid_sent = sum(shot.valid is not None for shot in shots[200:])
    assert len(accepted) == valid_sent
    assert not any(status >= 500 for status in statuses)
    assert tf.proc.poll() is None
    assert ready.status_code == 200
    assert after < RSS_BOUND_KB
    assert await receiver.wait_for(lambda: len(receiver.on("/flood")) >= VALID, timeout=60)
    assert set(accepted) <= {r.event_id for r in receiver.on("/flood")}
    assert "unhandled error" not in tf.log()
    print(
        f"\nflood: {len(shots) - 200} requests in {elapsed:.1f} s, statuses {dict(statuses)}, "
        f"RSS {before // 1024} MB before, {after // 1024} MB after"
    )
