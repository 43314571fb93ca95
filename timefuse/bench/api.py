"""The bench's client of timefuse's REST API: batch submissions, statistics, /metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from timefuse.bench.processes import BenchError

BATCH_PATH = "/api/v1/events/batch"
ONE_PATH = "/api/v1/events"
STATISTICS_PATH = "/api/v1/events/statistics"
BATCH_LIMIT = 1000
SOURCE = "timefuse-bench"
# About the size of a typical webhook body.
PAYLOAD_PAD = "x" * 200

_encoder = msgspec.json.Encoder()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def event_fields(
    run_id: str, seq: int, scheduled_at: str, delivery_type: str, destination: str
) -> dict[str, Any]:
    return {
        "external_job_id": f"{run_id}-{seq}",
        "source": SOURCE,
        "scheduled_at": scheduled_at,
        "delivery_type": delivery_type,
        "destination": destination,
        "payload": {"run": run_id, "seq": seq, "pad": PAYLOAD_PAD},
        "max_retries": 3,
    }


class TimefuseApi:
    """One pooled aiohttp session to a timefuse API, with the caller's API key on every call."""

    def __init__(self, base_url: str, api_key: str | None, connections: int = 100) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self._session.close()

    async def submit_one(self, event: dict[str, Any]) -> str:
        """Submit one event on its own (``POST /api/v1/events``); returns its id."""
        async with self._session.post(self.base_url + ONE_PATH, data=_encoder.encode(event)) as r:
            text = await r.read()
            if r.status != 202:
                raise BenchError(f"POST {ONE_PATH} answered {r.status}: {text[:300]!r}")
        return str(msgspec.json.decode(text)["data"]["id"])

    async def submit_batch(self, events: Sequence[dict[str, Any]]) -> list[str]:
        """Submit up to 1000 events; returns their ids in order. Any rejection is an error."""
        body = _encoder.encode({"events": list(events)})
        async with self._session.post(self.base_url + BATCH_PATH, data=body) as response:
            text = await response.read()
            if response.status != 202:
                raise BenchError(f"POST {BATCH_PATH} answered {response.status}: {text[:300]!r}")
        data = msgspec.json.decode(text)["data"]
        if data["rejected"]:
            first = data["rejected_events"][0]
            raise BenchError(f"timefuse rejected {data['rejected']} events, e.g. {first}")
        ids: list[str] = [""] * len(events)
        for accepted in data["ids"]:
            ids[accepted["index"]] = accepted["id"]
        return ids

    async def statistics(self) -> dict[str, int]:
        async with self._session.get(self.base_url + STATISTICS_PATH) as response:
            text = await response.read()
            if response.status != 200:
                status = response.status
                raise BenchError(f"GET {STATISTICS_PATH} answered {status}: {text[:300]!r}")
        counts: dict[str, int] = msgspec.json.decode(text)["data"]
        return counts

    async def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` summed over its labels, by sample name."""
        async with self._session.get(self.base_url + "/metrics") as response:
            if response.status != 200:
                raise BenchError(f"GET /metrics answered {response.status}")
            text = await response.text()
        return sum_samples(text)


def sum_samples(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if math.isfinite(sample.value):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def metric_delta(before: dict[str, float], after: dict[str, float], names: Iterable[str]) -> int:
    return int(sum(after.get(n, 0.0) - before.get(n, 0.0) for n in names))
