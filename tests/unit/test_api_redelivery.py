"""Attempt histories and redelivery: one event, or the dead letters in bulk."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, error_fields, running_api
from timefuse.domain.status import EventStatus

ATTEMPT_FIELDS = {
    "sequence", "attempt", "started_at", "duration_ms", "outcome", "status_code", "error",
    "worker",
}  # fmt: skip
ADMIN_REDELIVER = f"{EVENTS}/admin/redeliver"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


class TestAttempts:
    async def test_attempts_are_listed_oldest_first_with_every_field(self, api: Harness) -> None:
        event_id = await api.attempted(EventStatus.PENDING)
        await api.attempted(EventStatus.COMPLETED, event_id)

        response = await api.client.get(f"{EVENTS}/{event_id}/attempts")

        assert response.status_code == 200
        assert_envelope(response.json(), success=True)
        attempts = response.json()["data"]
        assert [set(a) for a in attempts] == [ATTEMPT_FIELDS, ATTEMPT_FIELDS]
        assert [a["sequence"] for a in attempts] == [1, 2]
        assert [a["outcome"] for a in attempts] == ["RETRIABLE", "SUCCESS"]
        assert [a["status_code"] for a in attempts] == [503, 200]
        assert attempts[0]["error"] == "HTTP 503"
        assert attempts[1]["worker"] == "worker-test"
        started = datetime.fromisoformat(attempts[0]["started_at"])
        assert started.utcoffset() == timedelta(0)

    async def test_an_event_never_attempted_has_an_empty_history(self, api: Harness) -> None:
        event_id = await api.submitted_id()

        response = await api.client.get(f"{EVENTS}/{event_id}/attempts")

        assert response.status_code == 200
        assert response.json()["data"] == []

    async def test_an_unknown_event_answers_404(self, api: Harness) -> None:
        response = await api.client.get(f"{EVENTS}/{uuid.uuid4()}/attempts")

        assert response.status_code == 404
        assert response.json()["error_code"] == "EVENT_NOT_FOUND"

    async def test_a_malformed_id_answers_400(self, api: Harness) -> None:
        response = await api.client.get(f"{EVENTS}/not-an-id/attempts")

        assert response.status_code == 400
        assert response.json()["error_code"] == "INVALID_EVENT_ID"


class TestRedeliver:
    @pytest.mark.parametrize(
        "status", [EventStatus.FAILED, EventStatus.DEAD_LETTER, EventStatus.COMPLETED]
    )
    async def test_a_finished_event_is_pending_again_due_now(
        self, api: Harness, status: EventStatus, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        woken: list[datetime | None] = []
        monkeypatch.setattr(api.tf.wakeup, "notify", woken.append)
        event_id = await api.attempted(status)
        before = datetime.now(UTC)

        response = await api.client.post(f"{EVENTS}/{event_id}/redeliver")

        assert response.status_code == 200, response.text
        assert_envelope(response.json(), success=True)
        event = response.json()["data"]
        assert (event["id"], event["status"]) == (event_id, "PENDING")
        assert (event["attempts"], event["retry_count"]) == (0, 0)
        due = datetime.fromisoformat(event["next_attempt_at"])
        assert before - timedelta(seconds=1) <= due <= datetime.now(UTC)
        assert len(woken) == 1
        assert woken[0] is not None

    async def test_the_history_goes_on_after_a_redelivery(self, api: Harness) -> None:
        event_id = await api.attempted(EventStatus.DEAD_LETTER)
        await api.client.post(f"{EVENTS}/{event_id}/redeliver")
        await api.attempted(EventStatus.COMPLETED, event_id)

        response = await api.client.get(f"{EVENTS}/{event_id}/attempts")

        attempts = response.json()["data"]
        assert [(a["sequence"], a["attempt"]) for a in attempts] == [(1, 1), (2, 1)]
        assert [a["outcome"] for a in attempts] == ["RETRIABLE", "SUCCESS"]

    async def test_a_pending_event_answers_409_naming_its_status(self, api: Harness) -> None:
        event_id = await api.submitted_id()

        response = await api.client.post(f"{EVENTS}/{event_id}/redeliver")

        assert response.status_code == 409
        assert_envelope(response.json(), success=False)
        assert response.json()["error_code"] == "EVENT_NOT_REDELIVERABLE"
        assert "PENDING" in response.json()["message"]

    async def test_a_cancelled_event_answers_409(self, api: Harness) -> None:
        event_id = await api.submitted_id()
        await api.client.delete(f"{EVENTS}/{event_id}")

        response = await api.client.post(f"{EVENTS}/{event_id}/redeliver")

        assert response.status_code == 409
        assert "CANCELLED" in response.json()["message"]

    async def test_an_unknown_event_answers_404(self, api: Harness) -> None:
        response = await api.client.post(f"{EVENTS}/{uuid.uuid4()}/redeliver")

        assert response.status_code == 404
        assert response.json()["error_code"] == "EVENT_NOT_FOUND"

    async def test_a_malformed_id_answers_400(self, api: Harness) -> None:
        response = await api.client.post(f"{EVENTS}/42/redeliver")

        assert response.status_code == 400
        assert response.json()["error_code"] == "INVALID_EVENT_ID"


class TestRedeliverDeadLetters:
    async def dead(self, api: Harness, source: str, hours: int) -> str:
        scheduled = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=hours)
        return await api.attempted(EventStatus.DEAD_LETTER, source=source, scheduled_at=scheduled)

    async def statuses(self, api: Harness, *ids: str) -> list[str]:
        events = [await api.store.get(event_id) for event_id in ids]
        return [event.status.value if event is not None else "gone" for event in events]

    async def test_every_dead_letter_is_redelivered_and_nothing_else(self, api: Harness) -> None:
        dead = [await self.dead(api, "alpha", 0), await self.dead(api, "beta", 1)]
        failed = await api.attempted(EventStatus.FAILED)

        response = await api.client.post(ADMIN_REDELIVER, json={})

        assert response.status_code == 200, response.text
        assert_envelope(response.json(), success=True)
        assert response.json()["data"] == {"redelivered": 2}
        assert await self.statuses(api, *dead, failed) == ["PENDING", "PENDING", "FAILED"]

    async def test_source_window_and_limit_select(self, api: Harness) -> None:
        a0, a1, a2 = [await self.dead(api, "alpha", hours) for hours in (0, 1, 2)]
        b0 = await self.dead(api, "beta", 0)

        by_source = await api.client.post(ADMIN_REDELIVER, json={"source": "beta"})
        by_window = await api.client.post(
            ADMIN_REDELIVER,
            json={"scheduled_from": "2020-01-01T00:30:00Z", "scheduled_to": "2020-01-01T02:00Z"},
        )
        by_limit = await api.client.post(ADMIN_REDELIVER, json={"limit": 1})

        assert by_source.json()["data"] == {"redelivered": 1}
        assert by_window.json()["data"] == {"redelivered": 1}  # a1 only: the window is half-open
        assert by_limit.json()["data"] == {"redelivered": 1}  # the earliest left: a0
        assert await self.statuses(api, a0, a1, a2, b0) == [
            "PENDING", "PENDING", "DEAD_LETTER", "PENDING",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 100_001}, "limit"),
            ({"limit": "10"}, "limit"),
            ({"source": ""}, "source"),
            ({"source": "al\x00pha"}, "source"),
            ({"source": "s" * 101}, "source"),
            ({"sources": ["alpha"]}, "body"),
            ({"scheduled_from": "2030-01-01T00:00:00"}, "scheduled_from"),
            ({"scheduled_to": "soon"}, "scheduled_to"),
            ({"scheduled_from": "2030-01-02T00Z", "scheduled_to": "2030-01-01T00Z"},
             "scheduled_to"),
            ([], "body"),
        ],
    )  # fmt: skip
    async def test_a_bad_body_answers_400_naming_the_field(
        self, api: Harness, body: object, field: str
    ) -> None:
        dead = await self.dead(api, "alpha", 0)

        response = await api.client.post(ADMIN_REDELIVER, json=body)

        assert response.status_code == 400, response.text
        assert_envelope(response.json(), success=False)
        assert error_fields(response) == {field}
        assert await self.statuses(api, dead) == ["DEAD_LETTER"]

    async def test_malformed_json_and_other_media_types_are_refused(self, api: Harness) -> None:
        malformed = await api.client.post(
            ADMIN_REDELIVER, content=b"{", headers={"content-type": "application/json"}
        )
        form = await api.client.post(ADMIN_REDELIVER, data={"source": "alpha"})

        assert (malformed.status_code, malformed.json()["error_code"]) == (400, "MALFORMED_JSON")
        assert form.status_code == 415
