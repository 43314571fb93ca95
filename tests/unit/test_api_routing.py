"""Routing, health, readiness and metrics: every answer an envelope, never an accidental 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Message, Scope

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, running_api

# A fixed id: test ids made from a random one would differ at every collection, and a tool
# that re-runs a test by its id (mutmut) could never find it again.
SOME_ID = "0f5b7c3e-2d4a-4e61-9a8b-3c2d1e0f9a7b"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", f"{EVENTS}/health"])
async def test_health_answers_up(api: Harness, path: str) -> None:
    response = await api.client.get(path)

    assert response.status_code == 200
    assert_envelope(response.json(), success=True)
    assert response.json()["data"]["status"] == "UP"


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/api/v1/nowhere",
        "/api/v2/events",
        f"{EVENTS}/external",
        f"{EVENTS}/external/",
        f"{EVENTS}/",
        "/health/",
        f"{EVENTS}/admin",
        f"{EVENTS}/admin/nothing",
        f"{EVENTS}/batch/attempts",
    ],
)
async def test_an_unknown_route_answers_404_in_the_envelope(api: Harness, path: str) -> None:
    response = await api.client.get(path)

    assert response.status_code == 404
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", EVENTS, {"GET", "HEAD", "POST"}),
        ("DELETE", f"{EVENTS}/{SOME_ID}/attempts", {"GET", "HEAD"}),
        ("GET", f"{EVENTS}/{SOME_ID}/redeliver", {"POST"}),
        ("GET", f"{EVENTS}/admin/redeliver", {"POST"}),
        ("GET", f"{EVENTS}/admin/cleanup", {"POST"}),
        ("DELETE", f"{EVENTS}/admin/destinations", {"GET", "HEAD"}),
        ("GET", f"{EVENTS}/batch", {"POST"}),
        ("DELETE", f"{EVENTS}/statistics", {"GET", "HEAD"}),
        ("POST", f"{EVENTS}/health", {"GET", "HEAD"}),
        ("PUT", f"{EVENTS}/{SOME_ID}", {"GET", "HEAD", "DELETE", "PATCH"}),
        ("POST", f"{EVENTS}/external/job-1", {"GET", "HEAD", "DELETE", "PATCH"}),
        ("POST", "/metrics", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_answers_405_with_the_allowed_ones(
    api: Harness, method: str, path: str, allowed: set[str]
) -> None:
    response = await api.client.request(method, path)

    assert response.status_code == 405
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


async def test_fixed_paths_are_not_read_as_event_ids(api: Harness) -> None:
    statistics = await api.client.get(f"{EVENTS}/statistics")
    health = await api.client.get(f"{EVENTS}/health")

    assert statistics.status_code == 200
    assert "TOTAL" in statistics.json()["data"]
    assert health.json()["data"] == {"status": "UP"}


async def test_metrics_are_served_in_prometheus_text(api: Harness) -> None:
    await api.submitted_id()

    response = await api.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'timefuse_events_received_total{delivery_type="http"} 1.0' in response.text


async def test_an_unexpected_error_answers_500_in_the_envelope(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> dict[str, int]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.service, "statistics", broken)

    response = await api.client.get(f"{EVENTS}/statistics")

    assert response.status_code == 500
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "INTERNAL_ERROR"
    assert "a bug" not in response.text


async def test_a_client_leaving_mid_body_is_not_an_internal_error(api: Harness) -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"source": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": EVENTS,
        "raw_path": EVENTS.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("timefuse", 80),
        "client": ("127.0.0.1", 1234),
    }

    await api.app(scope, receive, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert b"CLIENT_DISCONNECTED" in sent[1]["body"]
    assert (await api.service.statistics())["TOTAL"] == 0


class TestReadiness:
    async def test_ready_when_every_part_is_ok(self, tmp_path: Path) -> None:
        async def parts() -> dict[str, str]:
            return {"store": "ok", "buffer": "ok"}

        async with running_api(tmp_path, readiness=parts) as api:
            response = await api.client.get("/health/ready")

        assert response.status_code == 200
        assert response.json()["data"] == {
            "status": "UP",
            "checks": {"store": "ok", "buffer": "ok"},
        }

    async def test_not_ready_names_the_failing_part(self, tmp_path: Path) -> None:
        async def parts() -> dict[str, str]:
            return {"store": "ok", "buffer": "broker unreachable"}

        async with running_api(tmp_path, readiness=parts) as api:
            response = await api.client.get("/health/ready")
            live = await api.client.get("/health/live")

        assert response.status_code == 503
        assert_envelope(response.json(), success=False)
        assert response.json()["error_code"] == "NOT_READY"
        assert "buffer: broker unreachable" in response.json()["message"]
        assert response.json()["data"]["status"] == "DOWN"
        assert live.status_code == 200

    async def test_a_part_that_is_ok_may_show_a_detail_and_stays_ready(
        self, tmp_path: Path
    ) -> None:
        async def parts() -> dict[str, str]:
            return {"store": "ok", "store_replica": "ok, 0.4 s behind the primary"}

        async with running_api(tmp_path, readiness=parts) as api:
            response = await api.client.get("/health/ready")

        assert response.status_code == 200
        assert response.json()["data"]["checks"]["store_replica"] == "ok, 0.4 s behind the primary"

    @pytest.mark.parametrize("state", ["okay", "ok but stale", "12.0 s behind the primary"])
    async def test_a_part_that_is_not_exactly_ok_is_not_ready(
        self, tmp_path: Path, state: str
    ) -> None:
        async def parts() -> dict[str, str]:
            return {"store": "ok", "store_replica": state}

        async with running_api(tmp_path, readiness=parts) as api:
            response = await api.client.get("/health/ready")

        assert response.status_code == 503
        assert f"store_replica: {state}" in response.json()["message"]

    async def test_a_readiness_check_that_raises_is_not_ready(self, tmp_path: Path) -> None:
        async def parts() -> dict[str, str]:
            raise ConnectionError("refused")

        async with running_api(tmp_path, readiness=parts) as api:
            response = await api.client.get("/health/ready")

        assert response.status_code == 503
        assert "refused" in response.json()["message"]
