"""Every request limit, one by one, each answered with its own clear 4xx (never a 500)."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_api_harness import (
    EVENTS,
    Harness,
    assert_envelope,
    at,
    error_fields,
    event_json,
    running_api,
)
from timefuse.domain.validation import SubmissionLimits, ValidationFailed, build_event
from timefuse.entrypoints.api.batch import check_size, items_decoder
from timefuse.entrypoints.api.jsonscan import exceeds_depth, without_strings
from timefuse.entrypoints.api.models import BatchIn
from timefuse.entrypoints.api.routes import external_id_problem

JSON = {"content-type": "application/json"}
BATCH = f"{EVENTS}/batch"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


class TestSizes:
    async def test_a_body_over_the_request_limit_is_413_and_a_payload_over_its_limit_422(
        self, tmp_path: Path
    ) -> None:
        env = {"TIMEFUSE_MAX_BODY_BYTES": "4000", "TIMEFUSE_MAX_PAYLOAD_BYTES": "1000"}
        async with running_api(tmp_path, env=env) as api:
            body_too_large = await api.submit(payload={"blob": "x" * 5000})
            payload_too_large = await api.submit(payload={"blob": "x" * 2000})
            batch = await api.client.post(
                BATCH,
                json={"events": [event_json(payload={"blob": "x" * 2000}), event_json()]},
            )

        assert body_too_large.status_code == 413
        assert body_too_large.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        assert payload_too_large.status_code == 422
        assert error_fields(payload_too_large) == {"payload"}
        # In a batch the oversized payload rejects its own item only.
        assert batch.status_code == 202
        assert batch.json()["data"]["rejected_events"][0]["errors"][0]["field"] == "payload"

    @pytest.mark.parametrize(("count", "status"), [(5, 202), (6, 400)])
    async def test_events_per_batch_are_bounded_by_the_setting(
        self, tmp_path: Path, count: int, status: int
    ) -> None:
        events = [event_json(external_job_id=f"job-{n}") for n in range(count)]
        async with running_api(tmp_path, env={"TIMEFUSE_MAX_BATCH_EVENTS": "5"}) as api:
            response = await api.client.post(BATCH, json={"events": events})

        assert response.status_code == status
        if status == 400:
            assert response.json()["message"] == "events must hold 1 to 5 events, got more"

    async def test_a_batch_of_millions_of_tiny_items_is_refused_before_it_is_decoded(
        self, api: Harness
    ) -> None:
        # Decoding 3 MB of "{}," first and counting after would build a million structs.
        body = b'{"events": [' + b"{}," * 1_000_000 + b"{}]}"

        tracemalloc.start()
        try:
            response = await api.client.post(BATCH, content=body, headers=JSON)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

        assert response.status_code == 400
        assert response.json()["message"] == "events must hold 1 to 1000 events, got more"
        assert peak < 10 * len(body)

    async def test_a_huge_array_in_a_field_is_not_built(self, api: Harness) -> None:
        body = json.dumps(event_json()).replace('"job-1"', "[" + "{}," * 500_000 + "{}]")

        tracemalloc.start()
        try:
            response = await api.client.post(EVENTS, content=body, headers=JSON)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

        assert response.status_code == 422
        assert error_fields(response) == {"external_job_id"}
        assert peak < 10 * len(body)


class TestDepth:
    @pytest.mark.parametrize("path", [EVENTS, BATCH])
    async def test_a_body_nested_100000_deep_is_400_not_500(self, api: Harness, path: str) -> None:
        for body in (nested(100_000), b'{"payload": ' + nested(100_000) + b"}"):
            response = await api.client.post(path, content=body, headers=JSON)

            assert response.status_code == 400, response.text
            assert_envelope(response.json(), success=False)
            assert response.json()["error_code"] == "JSON_TOO_DEEP"

    async def test_unclosed_nesting_is_400_too(self, api: Harness) -> None:
        response = await api.client.post(EVENTS, content=b"[" * 100_000, headers=JSON)

        assert response.status_code == 400

    @pytest.mark.parametrize(("depth", "status"), [(31, 202), (32, 400)])
    async def test_the_limit_counts_the_whole_body(
        self, api: Harness, depth: int, status: int
    ) -> None:
        # The event object is one level, so the payload may nest 31 more under the default 32.
        payload = json.loads(nested(depth - 1, b"{}"))
        response = await api.submit(payload=payload)

        assert response.status_code == status, response.text

    async def test_brackets_inside_strings_nest_nothing(self, api: Harness) -> None:
        response = await api.submit(payload={"text": "[" * 1000 + '\\"{' * 100})

        assert response.status_code == 202

    async def test_the_depth_is_configurable(self, tmp_path: Path) -> None:
        async with running_api(tmp_path, env={"TIMEFUSE_MAX_JSON_DEPTH": "3"}) as api:
            shallow = await api.submit(payload={"a": 1})
            deep = await api.submit(payload={"a": {"b": [1]}})

        assert (shallow.status_code, deep.status_code) == (202, 400)
        assert "more than 3 levels" in deep.json()["message"]


class TestSchedule:
    async def test_the_horizon_is_configurable(self, tmp_path: Path) -> None:
        async with running_api(tmp_path, env={"TIMEFUSE_MAX_HORIZON_DAYS": "1"}) as api:
            near = await api.submit(scheduled_at=at(3600))
            far = await api.submit(scheduled_at=at(2 * 86400), external_job_id="far")

        assert near.status_code == 202
        assert far.status_code == 422
        assert "1 days ahead" in far.json()["errors"][0]["message"]

    async def test_the_default_horizon_is_ten_years(self, api: Harness) -> None:
        response = await api.submit(scheduled_at=at(3651 * 86400))

        assert error_fields(response) == {"scheduled_at"}

    @pytest.mark.parametrize(("grace", "status"), [("5", 422), ("60", 202)])
    async def test_the_past_grace_is_configurable(
        self, tmp_path: Path, grace: str, status: int
    ) -> None:
        async with running_api(tmp_path, env={"TIMEFUSE_PAST_GRACE_SECONDS": grace}) as api:
            response = await api.submit(scheduled_at=at(-30))

        assert response.status_code == status


class TestPathParameters:
    @pytest.mark.parametrize(
        "external",
        ["nul%00byte", "esc%1Bape", "zero%E2%80%8Bwidth", "%20", "x" * 256],
        ids=["nul", "escape", "zero-width", "blank", "too-long"],
    )
    @pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/all"), ("DELETE", "")])
    async def test_a_bad_external_id_is_400_naming_it(
        self, api: Harness, external: str, method: str, suffix: str
    ) -> None:
        response = await api.client.request(method, f"{EVENTS}/external/{external}{suffix}")

        assert response.status_code == 400
        assert error_fields(response) == {"external_job_id"}

    async def test_an_id_with_control_characters_is_400(self, api: Harness) -> None:
        response = await api.client.get(f"{EVENTS}/abc%00def")

        assert response.json()["error_code"] == "INVALID_EVENT_ID"


# Property tests of the checks the limits rely on.

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,: \n'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab'), children, max_size=4)
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_JSON, st.integers(min_value=0, max_value=12))
def test_the_depth_check_agrees_with_a_recursive_count(value: Any, limit: int) -> None:
    text = json.dumps(value).encode()

    assert exceeds_depth(text, limit) is (_depth(value) > limit)


@given(st.lists(_JSON, min_size=1, max_size=20))
def test_a_batch_is_split_into_its_items_raw(items: list[Any]) -> None:
    body = BatchIn(msgspec.Raw(json.dumps(items).encode()))

    split = check_size(body, items_decoder(20), 20)

    assert [json.loads(bytes(raw)) for raw in split] == items


@given(st.lists(st.text(alphabet='[]{}"\\ab', max_size=30), max_size=8))
def test_strings_are_emptied_whatever_they_hold(texts: list[str]) -> None:
    text = json.dumps(texts).encode()

    assert without_strings(text) == json.dumps([""] * len(texts)).encode()


def test_a_string_longer_than_a_chunk_is_emptied_too() -> None:
    text = json.dumps(["a" * 200_000 + '"[', ["x" * 70_000, "]"], "\\"]).encode()

    assert without_strings(text) == b'["", ["", ""], ""]'


_NOW = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.text(max_size=300))
def test_a_path_external_id_meets_the_rules_of_a_submitted_one(value: str) -> None:
    limits = SubmissionLimits()
    fields = {**event_json(external_job_id=value, scheduled_at="2026-01-01T01:00:00Z")}
    fields["payload"] = b"{}"
    try:
        build_event(fields, event_id="x", now=_NOW, limits=limits)
        domain_ok = True
    except ValidationFailed as exc:
        domain_ok = "external_job_id" not in {e.field for e in exc.errors}

    assert (external_id_problem(value, limits.max_external_job_id) is None) is domain_ok


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+03:04", "9999-12-31T23:59:59-05:00"])
async def test_an_instant_out_of_range_in_utc_is_422_not_500(api: Harness, instant: str) -> None:
    # Found by the schemathesis run (tests/integration/test_api_fuzz.py).
    response = await api.submit(scheduled_at=instant)

    assert response.status_code == 422
    assert error_fields(response) == {"scheduled_at"}
