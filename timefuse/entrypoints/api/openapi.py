"""The OpenAPI 3.1 description, built from the operations and the msgspec models they use.

The schemas come from the very structs that decode requests and encode answers
(:func:`msgspec.json.schema_components`), and the paths from the operation tables that build
the routes, so the description can't say something the API doesn't do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from timefuse.entrypoints.api.docs_page import DOCS_HTML
from timefuse.entrypoints.api.envelope import Envelope, ErrorEnvelope
from timefuse.entrypoints.api.operations import Operation

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
SECURITY_SCHEME = "bearerAuth"
_REF = "#/components/schemas/{name}"

_ERRORS = {
    400: "The request can't be read: malformed JSON, nesting too deep, a body or batch "
    "envelope of the wrong shape (not an object, events not an array or over the limit), a "
    "malformed id, cursor or query parameter, or a query parameter the operation doesn't take "
    "(error_code and errors say which).",
    401: "No API key, or not a valid one (WWW-Authenticate: Bearer).",
    403: "The key lacks the role, or may not act for the event's source.",
    404: "No such event (or schedule) among those the key may see (or, for a destination, "
    "none this process's dispatcher knows; for refused ingest records, no Kafka ingest).",
    409: "The event's status doesn't allow it (the message names the status): cancelling needs "
    "PENDING; redelivering needs COMPLETED, FAILED or DEAD_LETTER; changing (PATCH) needs "
    "PENDING, or a scheduled_at its job has no other event at. For a schedule: it kept "
    "changing under the request (try again).",
    412: "if_version names another version than the event's (data holds the event as it is).",
    413: "The request body is larger than TIMEFUSE_MAX_BODY_BYTES. (An event's payload over "
    "TIMEFUSE_MAX_PAYLOAD_BYTES is a 422 naming the payload field.)",
    415: "The body is not application/json (or a +json type).",
    422: "The request was read, but a field of the event (or schedule) it holds breaks a rule; "
    "errors names each (a destination refused, a port with leading zeros, credentials in a "
    "URL, a forbidden header, a payload too large, an unknown field; for a schedule an "
    "invalid cron, an unknown time zone, ...). For a batch: no event was accepted, and data "
    "lists the rejections.",
    429: "The event's source is over its quota (error_code QUOTA_RATE: its submission rate, "
    "with Retry-After; QUOTA_PENDING: its PENDING events); nothing was accepted.",
    503: "A part timefuse needs (store, buffer) is unavailable; nothing was accepted or changed.",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured request limits, stated in the description."""

    max_body_bytes: int
    max_json_depth: int
    max_batch_events: int


class ApiDescription:
    """Serves ``/openapi.json`` and the ``/docs`` page rendering it."""

    def __init__(self) -> None:
        self._encoded = b"{}"

    def publish(self, spec: dict[str, Any]) -> None:
        # Encoded once: the description changes only with the process's configuration.
        self._encoded = msgspec.json.encode(spec)

    async def spec(self, request: Request) -> Response:
        return Response(self._encoded, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        # The page is static and self-contained (no CDN): it fetches the description itself,
        # with the key typed into it when keys are configured.
        csp = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": csp})

    def operations(self) -> list[Operation]:
        tag = "description"
        return [
            Operation(
                "GET", OPENAPI_PATH, self.spec, "This OpenAPI description", tag,
                data=None, description="Needs a key (any role) when keys are configured.",
            ),
            Operation(
                "GET", DOCS_PATH, self.docs, "A page rendering this description", tag,
                public=True, media_type="text/html",
            ),
        ]  # fmt: skip


def build_spec(operations: Sequence[Operation], *, auth: bool, limits: Limits) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations``.

    :param auth: whether keys are configured: operations then name the bearer scheme and
        answer 401 and 403.
    """
    types = _types(operations)
    schemas, components = _tidy(msgspec.json.schema_components(types, ref_template=_REF))
    if "BatchIn" in components:
        # The model states the default bound; the document states the one in force.
        components["BatchIn"]["properties"]["events"]["maxItems"] = limits.max_batch_events
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.openapi_path, {})[op.method.lower()] = _operation(op, schema_of, auth)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "timefuse",
            "version": _version(),
            "description": _description(auth, limits),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from TIMEFUSE_API_KEYS_FILE.",
                }
            },
        },
    }


def _tidy(generated: tuple[Any, Any]) -> tuple[Any, Any]:
    # msgspec names a generic over a list by its item's full path
    # ("Envelope_list_timefuse.entrypoints.api.models.EventOut__"); drop the module path.
    text = msgspec.json.encode(generated)
    tidy = re.sub(rb"timefuse(?:\.[a-z_]+)+\.", b"", text)
    result: tuple[Any, Any] = tuple(msgspec.json.decode(tidy))
    return result


def _envelope_of(data: Any) -> Any:
    # Envelope[op.data] written inline reads to mypy as a type expression naming a variable.
    return Envelope[data]


def _types(operations: Iterable[Operation]) -> list[Any]:
    types: list[Any] = [ErrorEnvelope]
    for op in operations:
        for model in (_envelope_of(op.data) if op.data is not None else None, op.body):
            if model is not None and model not in types:
                types.append(model)
    return types


def _operation(op: Operation, schema_of: dict[Any, Any], auth: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": _responses(op, schema_of, auth),
    }
    if op.description:
        document["description"] = op.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": dict(schema)}
        for name, schema in op.params.items()
    ]
    parameters += [_query_parameter(name, schema) for name, schema in op.query.items()]
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        content = {"application/json": {"schema": schema_of[op.body]}}
        document["requestBody"] = {"required": True, "content": content}
    needs_key = auth and not op.public
    document["security"] = [{SECURITY_SCHEME: []}] if needs_key else []
    # The role is timefuse's own notion; an extension field keeps it beside the operation.
    document["x-timefuse-role"] = (
        "public" if op.public else op.role.value if op.role is not None else "any key"
    )
    return document


def _query_parameter(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
    rest = dict(schema)
    if "description" in rest:
        parameter["description"] = rest.pop("description")
    parameter["schema"] = rest
    return parameter


def _responses(op: Operation, schema_of: dict[Any, Any], auth: bool) -> dict[str, Any]:
    if op.data is not None:
        success = schema_of[_envelope_of(op.data)]
        content = {"application/json": {"schema": success}}
    elif op.media_type == "application/json":
        content = {"application/json": {"schema": {"type": "object"}}}
    else:
        content = {op.media_type: {"schema": {"type": "string"}}}
    answer: dict[str, Any] = {"description": op.summary, "content": content}
    if op.headers:
        answer["headers"] = {name: dict(header) for name, header in op.headers.items()}
    responses: dict[str, Any] = {str(status): dict(answer) for status in (op.status, *op.also)}
    # Every operation answers 400 to a query parameter it doesn't take (check_query).
    statuses = {*op.errors, 400}
    if auth and not op.public:
        statuses.add(401)
        if op.role is not None:
            statuses.add(403)
    error = {"application/json": {"schema": schema_of[ErrorEnvelope]}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _ERRORS[status], "content": error}
    return responses


def _operation_id(op: Operation) -> str:
    words = re.findall(r"[a-z0-9]+", op.openapi_path.lower())
    return "_".join([op.method.lower(), *words])


def _description(auth: bool, limits: Limits) -> str:
    access = (
        "Every operation but the health probes (and /docs) needs `Authorization: Bearer <key>`."
        if auth
        else "No API keys are configured: this server trusts every caller (loopback only)."
    )
    return (
        "Scheduled event orchestrator: events submitted here are delivered at their time, "
        f"at least once. {access} Limits: request body {limits.max_body_bytes} bytes (413), "
        f"JSON nesting {limits.max_json_depth} levels (400), {limits.max_batch_events} events "
        "per batch (400)."
    )


def _version() -> str:
    try:
        return version("timefuse")
    except PackageNotFoundError:
        return "0"
