"""Schemathesis against the live app: every operation, with and without keys configured.

The app runs in-process (ASGI) over a real SQLite store opened by its lifespan, with the
built-in delivery plugins. Each operation gets a bounded number of generated requests; every
answer must not be a 5xx and must match the status codes, content types and schemas its own
/openapi.json documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.config import Settings
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.auth import ApiKey, KeyRing, Role, hash_key
from timefuse.entrypoints.bootstrap import bootstrap
from timefuse.service.metrics import Metrics

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Reads and submits for every source, but can't cancel: the fuzzer meets 403s too.
KEY = "tfk_fuzz"
KEYS = KeyRing([ApiKey("fuzz", hash_key(KEY), None, frozenset({Role.SUBMIT, Role.READ}))])
# /metrics needs a key with the metrics role once keys are configured.
PUBLIC = {"/health", "/health/live", "/health/ready", "/api/v1/events/health", "/docs"}


def live_app(keys: KeyRing | None) -> Starlette:
    """The app over a SQLite store its lifespan opens.

    Built when the module is collected: schemathesis reads /openapi.json then to generate
    the tests (its fixture-based loader does not run under pytest 9). In memory, so nothing
    touches the disk until the tests run, and the lifespan closes it at exit.
    """
    settings_ = Settings.from_env({})
    store = SqliteEventStore(":memory:")
    tf = bootstrap(settings_, store=store, buffer=InlineIngestBuffer(store), metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    return create_app(
        service=tf.service,
        metrics=tf.metrics,
        settings=settings_.api,
        lifespan=lifespan,
        keys=keys,
        admin=tf.admin,
        schedules=tf.schedules,
    )


open_schema = schemathesis.openapi.from_asgi("/openapi.json", live_app(None))
keyed_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", live_app(KEYS), headers={"Authorization": f"Bearer {KEY}"}
)


@open_schema.parametrize()
@FUZZ
def test_without_keys(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


@keyed_schema.parametrize()
@FUZZ
def test_with_a_key(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)


@keyed_schema.parametrize()
@settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_with_keys_but_none_sent(case: schemathesis.Case) -> None:
    # Whatever the request, without a key the answer is a documented 401 (or a public one).
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == 401 or case.operation.path in PUBLIC
