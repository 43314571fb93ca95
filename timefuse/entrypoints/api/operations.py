"""Operations: each route's handler, the role it needs, and what it takes and answers.

One table of :class:`Operation` per part of the API builds both the Starlette routes and the
OpenAPI description (:mod:`timefuse.entrypoints.api.openapi`), so the two can't drift apart;
a test fails for any route of the app that has no operation.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.access import FORBIDDEN, principal
from timefuse.entrypoints.api.errors import VALIDATION_FAILED, ApiError
from timefuse.entrypoints.auth import Role

Handler = Callable[[Request], Awaitable[Response]]

# "{event_id:event_id}" in a Starlette path is "{event_id}" in OpenAPI.
_CONVERTOR = re.compile(r"{(\w+):\w+}")


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path.

    :param role: the role a key needs; ``None`` with ``public`` False: any valid key.
    :param public: served without a key, even when keys are configured.
    :param also: other success statuses it answers, with the same ``data``.
    :param data: the type of the envelope's ``data`` on success; ``None`` when the answer is
        not an envelope (``media_type`` then says what it is).
    :param body: the msgspec type the JSON request body is decoded into.
    :param errors: the error statuses it answers besides 401/403 (added when it needs a key).
    :param params: JSON schemas of the path parameters, by name.
    :param query: JSON schemas of the (optional) query parameters, by name; a ``description``
        in one describes the parameter.
    :param headers: headers a success answer may carry, by name: OpenAPI header objects
        (``description`` and ``schema``).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    role: Role | None = None
    public: bool = False
    status: int = 200
    also: tuple[int, ...] = ()
    data: Any = None
    body: Any = None
    errors: tuple[int, ...] = ()
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    media_type: str = "application/json"
    description: str = ""

    @property
    def openapi_path(self) -> str:
        return openapi_path(self.path)


def openapi_path(path: str) -> str:
    return _CONVERTOR.sub(r"{\1}", path)


def build_routes(operations: Iterable[Operation]) -> list[Route]:
    """One route per path, in the order the paths first appear.

    Methods of one path share a route, so a wrong method's 405 lists them all in ``Allow``.
    """
    by_path: dict[str, dict[str, Operation]] = {}
    for operation in operations:
        methods = by_path.setdefault(operation.path, {})
        if operation.method in methods:
            raise ValueError(f"two operations for {operation.method} {operation.path}")
        methods[operation.method] = operation
    return [Route(path, _endpoint(ops), methods=list(ops)) for path, ops in by_path.items()]


def _endpoint(operations: Mapping[str, Operation]) -> Handler:
    async def endpoint(request: Request) -> Response:
        # Starlette answers HEAD with the GET route.
        operation = operations["GET" if request.method == "HEAD" else request.method]
        role = operation.role
        if role is not None and not principal(request).has(role):
            raise ApiError(403, FORBIDDEN, f"this operation needs a key with the {role.value} role")
        check_query(operation, request.query_params.keys())
        return await operation.handler(request)

    return endpoint


def check_query(operation: Operation, names: Iterable[str]) -> None:
    """400 naming every query parameter ``operation`` doesn't take.

    A misspelt filter (``?sttaus=FAILED``) ignored would widen the answer, or the action,
    beyond what the caller meant.
    """
    unknown = sorted({name for name in names if name not in operation.query})
    if not unknown:
        return
    takes = ", ".join(sorted(operation.query)) or "none"
    message = f"is not a parameter of this operation (it takes: {takes})"
    errors = [FieldError(name[:100], message) for name in unknown[:20]]
    named = ", ".join(repr(name[:100]) for name in unknown[:20])
    raise ApiError(400, VALIDATION_FAILED, f"unknown query parameters: {named}", errors=errors)


def public_paths(operations: Iterable[Operation]) -> frozenset[str]:
    paths = frozenset(op.path for op in operations if op.public)
    # The authentication middleware runs before routing and compares exact paths.
    templated = [path for path in paths if "{" in path]
    if templated:
        raise ValueError(f"a public operation must have a fixed path: {templated}")
    return paths
