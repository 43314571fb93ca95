"""What an operator sees of a running ``timefuse serve``: /metrics, health probes, log lines."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.postgres_server import PostgresServer
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver, always

MARKER = f"PAYLOAD-MARKER-{uuid.uuid4().hex}"
# Debug level: the per-attempt lines are the ones that must carry event_id, source, attempt.
ENV = {"TIMEFUSE_LOG_LEVEL": "debug", "TIMEFUSE_PLUGINS": "", "TIMEFUSE_LOG_FORMAT": "auto"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    server.behaviours["/unavailable"] = always(503)
    server.behaviours["/refused"] = always(400)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[TimefuseProcess]:
    # Not a terminal: the log goes to a file, so "auto" must pick JSON.
    process = TimefuseProcess(tmp_path, ENV)
    process.start()
    yield process
    process.close()


def metric_sums(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


async def scrape(client: httpx.AsyncClient, base_url: str) -> dict[str, float]:
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200
    return metric_sums(response.text)


def event(destination: str, due: datetime, max_retries: int = 3) -> dict[str, Any]:
    return {
        "external_job_id": f"obs-{uuid.uuid4().hex[:8]}",
        "source": "observability",
        "scheduled_at": due.isoformat(),
        "delivery_type": "http",
        "destination": destination,
        "payload": {"note": MARKER},
        "max_retries": max_retries,
    }


async def submit(
    client: httpx.AsyncClient, base_url: str, events: list[dict[str, Any]]
) -> list[str]:
    response = await client.post(f"{base_url}/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    return [item["id"] for item in response.json()["data"]["ids"]]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def grew(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def flow_events(
    client: httpx.AsyncClient, serve: TimefuseProcess, receiver: Receiver
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Three deliveries, one dead letter, one permanent failure, one cancellation."""
    base = serve.base_url
    before = await scrape(client, base)
    now = datetime.now(UTC)
    ids = await submit(
        client,
        base,
        [event(receiver.url("/ok"), now) for _ in range(3)]
        + [event(receiver.url("/unavailable"), now, max_retries=0)]
        + [event(receiver.url("/refused"), now)]
        + [event(receiver.url("/ok"), now + timedelta(days=1))],
    )
    assert (await client.delete(f"{base}/api/v1/events/{ids[-1]}")).status_code == 200

    async def settled() -> bool:
        after = await scrape(client, base)
        return grew(before, after, "timefuse_delivery_duration_seconds_count") >= 5

    await wait_until(settled)
    return before, await scrape(client, base), ids


async def test_metrics_move_as_events_flow(serve: TimefuseProcess, receiver: Receiver) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        before, after, _ = await flow_events(client, serve, receiver)

    assert grew(before, after, "timefuse_events_received_total") == 6
    assert grew(before, after, "timefuse_events_delivered_total") == 3
    assert grew(before, after, "timefuse_delivery_lateness_seconds_count") == 3
    assert grew(before, after, "timefuse_delivery_duration_seconds_count") == 5
    assert grew(before, after, "timefuse_events_failed_total") == 2
    assert grew(before, after, "timefuse_events_dead_lettered_total") == 1
    assert grew(before, after, "timefuse_events_permanently_failed_total") == 1
    assert grew(before, after, "timefuse_events_cancelled_total") == 1
    assert grew(before, after, "timefuse_dispatcher_batch_size_count") >= 1
    # Cached gauges and the process's own series are there without any request asking.
    assert "timefuse_events" in after
    assert after["process_resident_memory_bytes"] > 0
    assert after["process_cpu_seconds_total"] > 0


async def test_liveness_answers_200(serve: TimefuseProcess) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"{serve.base_url}/health/live")

    assert response.status_code == 200


def log_lines(process: TimefuseProcess) -> list[str]:
    return [line for line in process.log_path.read_text().splitlines() if line.strip()]


async def test_log_lines_are_json_with_delivery_context_and_no_payload(
    serve: TimefuseProcess, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        _, _, ids = await flow_events(client, serve, receiver)
    serve.stop()

    lines = log_lines(serve)
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    about_events = [r for r in records if any(i in json.dumps(r) for i in ids)]
    for record in about_events:
        assert {"event_id", "source", "attempt"} <= record.keys(), record
    attempted = {r["event_id"] for r in about_events}
    assert set(ids[:5]) <= attempted  # one line at least per attempted event
    assert all(MARKER not in line for line in lines)


async def test_library_log_records_are_json_too(serve: TimefuseProcess) -> None:
    # Bytes that aren't HTTP make uvicorn log a warning through the standard library.
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        sock.recv(1024)
    serve.stop()

    records = [json.loads(line) for line in log_lines(serve)]  # every line parses
    # The library's own warning is among them, as JSON, with its logger's name.
    uvicorn = [r for r in records if str(r.get("logger", "")).startswith("uvicorn")]
    assert uvicorn, f"no uvicorn record among {len(records)} lines"
    assert any(r["level"] == "warning" for r in uvicorn), uvicorn


def migrate(dsn: str, workdir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "timefuse", "migrate"],
        env={**TimefuseProcess(workdir, {}).env, "DATABASE_URL": dsn},
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=60,
    )


async def readiness(client: httpx.AsyncClient, base_url: str) -> httpx.Response:
    return await client.get(f"{base_url}/health/ready")


@pytest.mark.postgres
async def test_readiness_names_the_store_while_the_database_is_down(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    if not postgres.restartable:
        pytest.skip(f"a {postgres.kind} PostgreSQL server can't be stopped by the tests")
    dsn = postgres.create_database(f"observability_{uuid.uuid4().hex[:8]}")
    migrate(dsn, tmp_path)
    process = TimefuseProcess(tmp_path, {"DATABASE_URL": dsn})
    process.start()
    try:
        async with httpx.AsyncClient(timeout=15.0) as client:
            assert (await readiness(client, process.base_url)).status_code == 200
            postgres.stop()
            try:
                down = await _until_status(client, process.base_url, 503)
                assert "store" in down.json()["message"]
                assert down.json()["data"]["checks"]["store"] != "ok"
                assert (await client.get(f"{process.base_url}/health/live")).status_code == 200
            finally:
                postgres.start()
            up = await _until_status(client, process.base_url, 200, timeout=60.0)
            assert up.json()["data"]["checks"]["store"] == "ok"
    finally:
        process.close()


async def _until_status(
    client: httpx.AsyncClient, base_url: str, status: int, timeout: float = 30.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await readiness(client, base_url)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        await asyncio.sleep(0.5)
