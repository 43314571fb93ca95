"""/openapi.json describes every route the app serves, and /docs renders it offline."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.unit.test_api_harness import EVENTS, Harness, running_api
from tests.unit.test_auth_matrix import KEYS, keys_file
from timefuse.entrypoints.api.operations import openapi_path


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


async def spec_of(api: Harness, key: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = await api.client.get("/openapi.json", headers=headers)
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def undocumented(app: Starlette, spec: dict[str, Any]) -> set[str]:
    """Every method on every route of ``app`` that has no operation in ``spec``."""
    missing = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        path = openapi_path(route.path)
        for method in route.methods or ():
            if method != "HEAD" and method.lower() not in spec["paths"].get(path, {}):
                missing.add(f"{method} {path}")
    return missing


def documented(spec: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}


async def test_every_route_is_described_and_nothing_else(api: Harness) -> None:
    spec = await spec_of(api)

    assert undocumented(api.app, spec) == set()
    served = {
        f"{method} {openapi_path(route.path)}"
        for route in api.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert documented(spec) == served


async def test_a_route_added_without_an_operation_is_caught(api: Harness) -> None:
    async def extra(request: object) -> PlainTextResponse:
        return PlainTextResponse("")

    api.app.router.routes.append(Route(f"{EVENTS}/admin/vacuum", extra, methods=["POST"]))

    assert undocumented(api.app, await spec_of(api)) == {f"POST {EVENTS}/admin/vacuum"}


async def test_it_is_openapi_3_1_with_the_models_as_schemas(api: Harness) -> None:
    spec = await spec_of(api)
    schemas = spec["components"]["schemas"]

    assert spec["openapi"] == "3.1.0"
    assert {"EventIn", "EventOut", "BatchOut", "ErrorEnvelope", "Envelope_EventOut_"} <= set(
        schemas
    )
    assert schemas["EventIn"]["properties"]["source"]["maxLength"] == 100
    assert schemas["EventOut"]["required"][:2] == ["id", "external_job_id"]
    submit = spec["paths"][EVENTS]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/EventIn"
    assert "source" in body["required"]
    assert set(submit["responses"]) == {"202", "400", "403", "413", "415", "422", "429", "503"}
    # Every reference resolves.
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', str(spec).replace("'", '"')))
    assert refs <= set(schemas)


async def test_without_keys_no_operation_asks_for_one(api: Harness) -> None:
    spec = await spec_of(api)

    operations = [op for ops in spec["paths"].values() for op in ops.values()]
    assert all(op["security"] == [] for op in operations)
    assert all("401" not in op["responses"] for op in operations)
    assert "loopback only" in spec["info"]["description"]


async def test_with_keys_operations_name_the_bearer_scheme(tmp_path: Path) -> None:
    env = {"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml"))}
    async with running_api(tmp_path, env=env) as api:
        spec = await spec_of(api, KEYS["alpha-reader"])

    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    cancel = spec["paths"][EVENTS + "/{event_id}"]["delete"]
    health = spec["paths"]["/health"]["get"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert cancel["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(cancel["responses"])
    assert cancel["x-timefuse-role"] == "cancel"
    assert health["security"] == []


async def test_the_limits_in_force_are_stated(tmp_path: Path) -> None:
    env = {"TIMEFUSE_MAX_JSON_DEPTH": "7", "TIMEFUSE_MAX_BATCH_EVENTS": "20"}
    async with running_api(tmp_path, env=env) as api:
        spec = await spec_of(api)

    assert "JSON nesting 7 levels" in spec["info"]["description"]
    events = spec["components"]["schemas"]["BatchIn"]["properties"]["events"]
    assert events["maxItems"] == 20


async def test_the_docs_page_is_self_contained(api: Harness) -> None:
    response = await api.client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert "openapi.json" in page
    # No CDN, no external script or style: it works offline.
    assert not re.search(r"(src|href)\s*=", page)
    assert "http://" not in page
    assert "https://" not in page
    # What comes from the description is inserted as text, never parsed as HTML.
    assert "innerHTML" not in page


@pytest.mark.parametrize(
    ("method", "path", "role", "statuses"),
    [
        ("get", EVENTS, "read", "200 400 401 403 503"),
        # A body that can't be read is 400; a field of a readable event that breaks a rule 422.
        ("post", EVENTS + "/batch", "submit", "202 400 401 403 413 415 422 429 503"),
        ("patch", EVENTS + "/{event_id}", "submit", "200 400 401 403 404 409 412 413 415 422 503"),
        ("get", EVENTS + "/{event_id}/attempts", "read", "200 400 401 403 404 503"),
        ("post", EVENTS + "/{event_id}/redeliver", "submit", "200 400 401 403 404 409 503"),
        ("post", EVENTS + "/admin/redeliver", "admin", "200 400 401 403 413 415 503"),
        ("post", EVENTS + "/admin/cleanup", "admin", "200 400 401 403 503"),
        # Every operation answers 400 to a query parameter it doesn't take.
        ("get", EVENTS + "/admin/destinations", "admin", "200 400 401 403"),
        ("post", EVENTS + "/admin/destinations/{key}/reset", "admin", "200 400 401 403 404"),
        ("get", EVENTS + "/admin/signing-keys", "admin", "200 400 401 403"),
        ("post", EVENTS + "/admin/signing-keys", "admin", "201 400 401 403 409 413 415 503"),
        (
            "patch",
            EVENTS + "/admin/signing-keys/{key_id}",
            "admin",
            "200 400 401 403 404 409 413 415 503",
        ),
        (
            "delete",
            EVENTS + "/admin/signing-keys/{key_id}",
            "admin",
            "200 400 401 403 404 409 503",
        ),
    ],
)
async def test_the_history_listing_and_admin_operations_are_described(
    tmp_path: Path, method: str, path: str, role: str, statuses: str
) -> None:
    env = {"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path / "keys.toml"))}
    async with running_api(tmp_path, env=env) as api:
        spec = await spec_of(api, KEYS["admin"])

    operation = spec["paths"][path][method]
    assert operation["x-timefuse-role"] == role
    assert set(operation["responses"]) == set(statuses.split())


async def test_query_parameters_are_described_as_optional(api: Harness) -> None:
    spec = await spec_of(api)

    listing = spec["paths"][EVENTS]["get"]["parameters"]
    cleanup = spec["paths"][EVENTS + "/admin/cleanup"]["post"]["parameters"]
    schemas = spec["components"]["schemas"]

    assert [p["name"] for p in listing] == [
        "status", "source", "scheduled_from", "scheduled_to", "limit", "cursor",
    ]  # fmt: skip
    assert all(p["in"] == "query" and p["required"] is False for p in listing + cleanup)
    by_name = {p["name"]: p for p in listing}
    assert by_name["limit"]["schema"] == {
        "type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
    }  # fmt: skip
    assert "DEAD_LETTER" in by_name["status"]["schema"]["enum"]
    assert cleanup[0]["schema"]["maximum"] == 36500
    assert schemas["RedeliverIn"]["additionalProperties"] is False
    assert {"EventPageOut", "AttemptOut", "DestinationOut"} <= set(schemas)


async def test_the_all_listing_declares_its_link_header(api: Harness) -> None:
    spec = await spec_of(api)

    listing = spec["paths"][EVENTS + "/external/{external_job_id}/all"]["get"]
    link = listing["responses"]["200"]["headers"]["Link"]
    assert link["schema"] == {"type": "string"}
    assert 'rel="next"' in link["description"]
    assert "100000" in link["description"]  # the depth it reaches, stated
    # Only the answers that carry it declare it.
    assert "headers" not in listing["responses"]["404"]
    assert "headers" not in spec["paths"][EVENTS]["post"]["responses"]["202"]
