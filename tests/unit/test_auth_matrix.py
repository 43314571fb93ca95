"""Isolation between API keys: two sources × every endpoint × each kind of caller.

The app runs over a real SQLite store with keys from a real keys file. Alpha's events are the
ones touched; the callers are alpha's own key (allowed), beta's key (wrong source), no key, a
key that is not configured, and alpha's key lacking the operation's role. The admin operations
have a matrix of their own: only the admin key may use them, whatever its sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.unit.test_api_harness import EVENTS, Harness, at, bearer, event_json, running_api
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.auth import hash_key
from timefuse.service.gate import Claimed
from timefuse.testing.factories import make_event

KEYS = {
    "alpha": "tfk_alpha_all",  # submit, read, cancel for alpha
    "beta": "tfk_beta_all",  # submit, read, cancel for beta
    "alpha-reader": "tfk_alpha_read",  # read only, alpha
    "alpha-submitter": "tfk_alpha_submit",  # submit only, alpha
    "admin": "tfk_admin",
}
NOT_CONFIGURED = "tfk_nobody_has_this_one"


def keys_file(path: Path) -> Path:
    entries = [
        ("alpha", '["alpha"]', '["submit", "read", "cancel"]'),
        ("beta", '["beta"]', '["submit", "read", "cancel"]'),
        ("alpha-reader", '["alpha"]', '["read"]'),
        ("alpha-submitter", '["alpha"]', '["submit"]'),
        ("admin", '"*"', '["admin"]'),
    ]
    text = "".join(
        f'[[keys]]\nname = "{name}"\nsha256 = "{hash_key(KEYS[name])}"\n'
        f"sources = {sources}\nroles = {roles}\n\n"
        for name, sources, roles in entries
    )
    path.write_text(text)
    return path


@dataclass
class World:
    api: Harness
    alpha_id: str  # PENDING
    beta_id: str  # PENDING
    alpha_dead_id: str  # DEAD_LETTER, after one attempt

    async def call(self, request: Request, key: str | None) -> httpx.Response:
        return await request(self, key)


Request = Callable[[World, str | None], Awaitable[httpx.Response]]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    env = {"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml"))}
    async with running_api(tmp_path, env=env) as api:
        alpha_id = await api.submitted_id(
            KEYS["alpha"], source="alpha", external_job_id="alpha-job"
        )
        beta_id = await api.submitted_id(KEYS["beta"], source="beta", external_job_id="beta-job")
        alpha_dead_id = await api.attempted(EventStatus.DEAD_LETTER, source="alpha")
        # The dispatcher has met one destination, so there is a breaker to reset.
        met = make_event(destination="https://alpha.example/hook", locked_by="w", claim_count=1)
        api.tf.dispatcher.gate.admit(Claimed.of(met, 0.0))
        yield World(api, alpha_id, beta_id, alpha_dead_id)


def _post(path: str, body: object) -> Request:
    async def request(world: World, key: str | None) -> httpx.Response:
        return await world.api.client.post(path, json=body, headers=bearer(key))

    return request


def _put(path: str, body: object) -> Request:
    async def request(world: World, key: str | None) -> httpx.Response:
        return await world.api.client.put(path, json=body, headers=bearer(key))

    return request


def _on_alpha(method: str, path: str) -> Request:
    async def request(world: World, key: str | None) -> httpx.Response:
        url = path.format(id=world.alpha_id, dead=world.alpha_dead_id)
        return await world.api.client.request(method, url, headers=bearer(key))

    return request


ALPHA_EVENT = event_json(source="alpha", external_job_id="alpha-new")

# Per endpoint: the request on alpha's events, the key lacking its role, and the status for
# alpha's key, beta's key (wrong source) and the key lacking the role.
ENDPOINTS: dict[str, tuple[Request, str, int, int]] = {
    "submit": (_post(EVENTS, ALPHA_EVENT), "alpha-reader", 202, 403),
    "batch": (_post(f"{EVENTS}/batch", {"events": [ALPHA_EVENT]}), "alpha-reader", 202, 403),
    "get": (_on_alpha("GET", EVENTS + "/{id}"), "alpha-submitter", 200, 404),
    "latest by external id": (
        _on_alpha("GET", f"{EVENTS}/external/alpha-job"),
        "alpha-submitter",
        200,
        404,
    ),
    # Listing answers what the key may see: nothing, for beta.
    "all by external id": (
        _on_alpha("GET", f"{EVENTS}/external/alpha-job/all"),
        "alpha-submitter",
        200,
        200,
    ),
    "statistics": (_on_alpha("GET", f"{EVENTS}/statistics"), "alpha-submitter", 200, 200),
    "cancel": (_on_alpha("DELETE", EVENTS + "/{id}"), "alpha-reader", 200, 404),
    "cancel by external id": (
        _on_alpha("DELETE", f"{EVENTS}/external/alpha-job"),
        "alpha-reader",
        200,
        404,
    ),
    # Listing, like statistics, answers what the key may see; naming a source it doesn't act
    # for lists nothing rather than refusing, so the answer tells nothing either way.
    "list": (_on_alpha("GET", EVENTS), "alpha-submitter", 200, 200),
    "list a source": (_on_alpha("GET", f"{EVENTS}?source=alpha"), "alpha-submitter", 200, 200),
    "attempts": (_on_alpha("GET", EVENTS + "/{dead}/attempts"), "alpha-submitter", 200, 404),
    # Redelivery sends the event again: the submit role.
    "redeliver": (_on_alpha("POST", EVENTS + "/{dead}/redeliver"), "alpha-reader", 200, 404),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("caller", ["allowed", "wrong source", "no key", "unknown key", "role"])
async def test_isolation_matrix(world: World, endpoint: str, caller: str) -> None:
    request, role_less, allowed, wrong_source = ENDPOINTS[endpoint]
    key, expected = {
        "allowed": (KEYS["alpha"], allowed),
        "wrong source": (KEYS["beta"], wrong_source),
        "no key": (None, 401),
        "unknown key": (NOT_CONFIGURED, 401),
        "role": (KEYS[role_less], 403),
    }[caller]

    response = await world.call(request, key)

    assert response.status_code == expected, response.text
    assert response.json()["success"] is (expected < 400)
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Whatever beta or a role-less key did, alpha's events are untouched.
    if caller != "allowed":
        await assert_untouched(world)


async def assert_untouched(world: World) -> None:
    pending = await world.api.store.get(world.alpha_id)
    dead = await world.api.store.get(world.alpha_dead_id)
    assert pending is not None
    assert dead is not None
    assert (pending.status.value, dead.status.value) == ("PENDING", "DEAD_LETTER")


ADMIN = f"{EVENTS}/admin"
ADMIN_ENDPOINTS: dict[str, Request] = {
    "redeliver dead letters": _post(f"{ADMIN}/redeliver", {"source": "alpha"}),
    "cleanup": _on_alpha("POST", f"{ADMIN}/cleanup?days=0"),
    "destinations": _on_alpha("GET", f"{ADMIN}/destinations"),
    "reset a destination": _on_alpha("POST", f"{ADMIN}/destinations/alpha.example:443/reset"),
    "signing keys": _on_alpha("GET", f"{ADMIN}/signing-keys"),
    # Another source's quota and use is not a tenant's to read.
    "quotas": _on_alpha("GET", f"{ADMIN}/quotas?source=alpha"),
    "set a quota": _put(f"{ADMIN}/quotas/beta", {"max_pending": 0}),
}


@pytest.mark.parametrize("endpoint", ADMIN_ENDPOINTS)
@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("admin", 200),
        ("alpha", 403),  # every role but admin, for alpha
        ("beta", 403),
        ("alpha-reader", 403),
        (None, 401),
        ("not configured", 401),
    ],
)
async def test_admin_matrix(world: World, endpoint: str, caller: str | None, status: int) -> None:
    key = NOT_CONFIGURED if caller == "not configured" else KEYS[caller] if caller else None

    response = await world.call(ADMIN_ENDPOINTS[endpoint], key)

    assert response.status_code == status, response.text
    assert response.json()["success"] is (status == 200)
    if status == 403:
        assert response.json()["error_code"] == "FORBIDDEN"
    if caller != "admin":
        # Neither redelivered nor cleaned up.
        await assert_untouched(world)


async def test_a_wrong_source_sees_nothing_of_the_other_sources_events(world: World) -> None:
    beta = KEYS["beta"]
    client = world.api.client

    listed = await client.get(f"{EVENTS}/external/alpha-job/all", headers=bearer(beta))
    statistics = await client.get(f"{EVENTS}/statistics", headers=bearer(beta))
    submitted = await client.post(EVENTS, json=ALPHA_EVENT, headers=bearer(beta))

    assert listed.json()["data"] == []
    assert statistics.json()["data"]["TOTAL"] == 1  # beta's own event only
    assert submitted.json()["error_code"] == "FORBIDDEN_SOURCE"


async def test_an_unknown_id_and_another_sources_id_answer_alike(world: World) -> None:
    beta = bearer(KEYS["beta"])
    foreign = await world.api.client.get(f"{EVENTS}/{world.alpha_id}", headers=beta)
    missing = await world.api.client.get(
        f"{EVENTS}/00000000-0000-4000-8000-000000000000", headers=beta
    )

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error_code"] == missing.json()["error_code"]


async def test_cancel_by_external_id_cancels_only_the_keys_sources(world: World) -> None:
    api = world.api
    shared = "shared-job"
    alpha_id = await api.submitted_id(KEYS["alpha"], source="alpha", external_job_id=shared)
    beta_id = await api.submitted_id(KEYS["beta"], source="beta", external_job_id=shared)

    response = await api.client.delete(f"{EVENTS}/external/{shared}", headers=bearer(KEYS["beta"]))

    assert response.json()["data"] == {"cancelled": 1}
    alpha = await api.store.get(alpha_id)
    beta = await api.store.get(beta_id)
    assert alpha is not None
    assert beta is not None
    assert (alpha.status.value, beta.status.value) == ("PENDING", "CANCELLED")


async def test_a_patch_by_external_id_changes_only_the_keys_sources_event(world: World) -> None:
    api = world.api
    shared = "shared-patch"
    when = at(7200)
    alpha_id = await api.submitted_id(
        KEYS["alpha"], source="alpha", external_job_id=shared, scheduled_at=when
    )
    # Beta's event is the newer one: an unscoped change would pick it.
    beta_id = await api.submitted_id(
        KEYS["beta"], source="beta", external_job_id=shared, scheduled_at=when
    )
    url = f"{EVENTS}/external/{shared}"

    changed = await api.client.patch(url, json={"max_retries": 7}, headers=bearer(KEYS["alpha"]))
    asked_for_beta = await api.client.patch(
        url, params={"source": "beta"}, json={"max_retries": 9}, headers=bearer(KEYS["alpha"])
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["id"] == alpha_id
    assert asked_for_beta.status_code == 404
    alpha = await api.store.get(alpha_id)
    beta = await api.store.get(beta_id)
    assert alpha is not None
    assert beta is not None
    assert (alpha.max_retries, beta.max_retries, beta.version) == (7, 3, 1)


async def test_a_batch_rejects_the_items_of_other_sources_one_by_one(world: World) -> None:
    items = [ALPHA_EVENT, event_json(source="beta", external_job_id="smuggled")]

    response = await world.api.client.post(
        f"{EVENTS}/batch", json={"events": items}, headers=bearer(KEYS["alpha"])
    )

    assert response.status_code == 202
    data = response.json()["data"]
    assert (data["accepted"], data["rejected"]) == (1, 1)
    rejected = data["rejected_events"][0]
    assert (rejected["index"], rejected["external_job_id"]) == (1, "smuggled")
    assert rejected["errors"][0]["field"] == "source"
    assert "may not submit" in rejected["reason"]


async def test_the_admin_key_sees_every_source(world: World) -> None:
    admin = bearer(KEYS["admin"])
    client = world.api.client

    alpha = await client.get(f"{EVENTS}/{world.alpha_id}", headers=admin)
    beta = await client.get(f"{EVENTS}/{world.beta_id}", headers=admin)
    statistics = await client.get(f"{EVENTS}/statistics", headers=admin)

    assert (alpha.status_code, beta.status_code) == (200, 200)
    assert statistics.json()["data"]["TOTAL"] == 3  # alpha's two and beta's one


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("alpha", 403), ("alpha-reader", 403), ("admin", 404)],
)
async def test_admin_paths_need_the_admin_role(world: World, key: str | None, status: int) -> None:
    # No operation has this path: only the admin key gets through to the router's 404.
    headers = bearer(KEYS[key] if key else None)
    response = await world.api.client.post(f"{EVENTS}/admin/vacuum", headers=headers)

    assert response.status_code == status


async def test_a_scoped_key_lists_only_its_sources_events(world: World) -> None:
    async def listed(key: str, **params: str) -> set[str]:
        response = await world.api.client.get(EVENTS, params=params, headers=bearer(KEYS[key]))
        assert response.status_code == 200, response.text
        return {event["id"] for event in response.json()["data"]["events"]}

    assert await listed("alpha") == {world.alpha_id, world.alpha_dead_id}
    assert await listed("beta") == {world.beta_id}
    assert await listed("beta", source="alpha") == set()
    assert await listed("alpha-reader", status="DEAD_LETTER") == {world.alpha_dead_id}
    assert await listed("admin") == {world.alpha_id, world.beta_id, world.alpha_dead_id}
    assert await listed("admin", source="beta") == {world.beta_id}


async def test_another_sources_event_and_an_unknown_one_answer_alike_on_redelivery(
    world: World,
) -> None:
    beta = bearer(KEYS["beta"])
    client = world.api.client
    unknown = "00000000-0000-4000-8000-000000000000"

    foreign = await client.post(f"{EVENTS}/{world.alpha_dead_id}/redeliver", headers=beta)
    missing = await client.post(f"{EVENTS}/{unknown}/redeliver", headers=beta)
    history = await client.get(f"{EVENTS}/{world.alpha_dead_id}/attempts", headers=beta)

    assert foreign.status_code == missing.status_code == history.status_code == 404
    assert foreign.json()["message"] == missing.json()["message"].replace(
        unknown, world.alpha_dead_id
    )


async def test_the_admin_key_reads_and_redelivers_any_sources_events(world: World) -> None:
    admin = bearer(KEYS["admin"])
    client = world.api.client

    history = await client.get(f"{EVENTS}/{world.alpha_dead_id}/attempts", headers=admin)
    redelivered = await client.post(f"{EVENTS}/{world.alpha_dead_id}/redeliver", headers=admin)

    assert history.status_code == 200
    assert len(history.json()["data"]) == 1
    assert redelivered.status_code == 200
    assert redelivered.json()["data"]["status"] == "PENDING"


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", f"{EVENTS}/health"])
async def test_health_probes_need_no_key(world: World, path: str) -> None:
    without = await world.api.client.get(path)
    with_a_bad_one = await world.api.client.get(path, headers=bearer(NOT_CONFIGURED))

    assert (without.status_code, with_a_bad_one.status_code) == (200, 200)


@pytest.mark.parametrize("path", ["/nowhere", f"{EVENTS}/statistics/", "/actuator/env"])
async def test_without_a_key_unknown_paths_answer_401_not_404(world: World, path: str) -> None:
    anonymous = await world.api.client.get(path)
    known = await world.api.client.get(path, headers=bearer(KEYS["alpha"]))

    assert anonymous.status_code == 401
    assert known.status_code == 404


@pytest.mark.parametrize(
    ("authorization", "invalid_token"),
    [
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", False),
        ("Bearer", True),
        ("Bearer " + "x" * 10_000, True),
        (f"bearer {NOT_CONFIGURED}", True),
    ],
)
async def test_malformed_or_foreign_credentials_answer_401(
    world: World, authorization: str, invalid_token: bool
) -> None:
    response = await world.api.client.get(
        f"{EVENTS}/statistics", headers={"authorization": authorization}
    )

    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHORIZED"
    assert ('error="invalid_token"' in response.headers["www-authenticate"]) is invalid_token


async def test_the_scheme_is_case_insensitive(world: World) -> None:
    response = await world.api.client.get(
        f"{EVENTS}/statistics", headers={"authorization": f"bEaReR {KEYS['alpha']}"}
    )

    assert response.status_code == 200


class TestMetricsAndDescription:
    @pytest.mark.parametrize(
        ("key", "status"),
        [(None, 401), ("alpha-submitter", 403), ("alpha-reader", 403), ("admin", 200)],
    )
    async def test_metrics_need_a_metrics_or_admin_key(
        self, world: World, key: str | None, status: int
    ) -> None:
        response = await world.api.client.get(
            "/metrics", headers=bearer(KEYS[key] if key else None)
        )

        assert response.status_code == status

    async def test_metrics_auth_off_serves_metrics_without_a_key(self, tmp_path: Path) -> None:
        env = {
            "TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml")),
            "TIMEFUSE_METRICS_AUTH": "false",
        }
        async with running_api(tmp_path, env=env) as api:
            response = await api.client.get("/metrics")

        assert response.status_code == 200
        assert "timefuse_events_received" in response.text

    @pytest.mark.parametrize(("key", "status"), [(None, 401), ("alpha-submitter", 200)])
    async def test_the_description_needs_any_key(
        self, world: World, key: str | None, status: int
    ) -> None:
        spec = await world.api.client.get(
            "/openapi.json", headers=bearer(KEYS[key] if key else None)
        )
        page = await world.api.client.get("/docs")

        assert spec.status_code == status
        assert page.status_code == 200
