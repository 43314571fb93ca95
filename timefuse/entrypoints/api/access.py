"""Who is calling: the bearer key of a request, its roles and the sources it may act for.

:class:`Authenticate` runs before routing, so without a valid key every path but the public
ones (health probes, the docs page) answers 401, unknown paths included: a caller without a key
learns nothing about which routes exist. Roles are checked per operation, after routing (see
:mod:`timefuse.entrypoints.api.operations`); sources are checked by the handlers, which know
which event a request touches.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from timefuse.entrypoints.api.envelope import fail
from timefuse.entrypoints.auth import ApiKey, KeyRing, Role

UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"
FORBIDDEN_SOURCE = "FORBIDDEN_SOURCE"

_STATE_KEY = "timefuse_principal"
# What a read-only key may do: look, whatever its roles would otherwise allow.
_READS = frozenset({"GET", "HEAD"})
_REALM = 'Bearer realm="timefuse"'


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``sources`` is ``None`` when it may act for every source."""

    name: str | None
    roles: frozenset[Role]
    sources: frozenset[str] | None
    read_only: bool = False

    def has(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles

    def sees(self, source: str) -> bool:
        return self.sources is None or source in self.sources

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        # An admin key acts for every source (the keys file insists on "*" for it anyway).
        sources = None if Role.ADMIN in key.roles else key.sources
        return cls(key.name, key.roles, sources, key.read_only)


# Without configured keys the API trusts its callers, which is why it then listens on
# loopback only (see timefuse.entrypoints.runner).
TRUSTED = Principal(None, frozenset(Role), None)
# A caller without a key, on a public path; also what a request that skipped the middleware
# gets, so a wiring mistake fails closed.
ANONYMOUS = Principal(None, frozenset(), frozenset())


def principal(request: Request) -> Principal:
    found = request.scope.get("state", {}).get(_STATE_KEY)
    return found if isinstance(found, Principal) else ANONYMOUS


class Authenticate:
    """Attach the caller's :class:`Principal` to each request; 401 where a key is missing.

    :param keys: the configured keys; ``None`` turns authentication off (every caller is
        :data:`TRUSTED`).
    :param public: exact paths served without a key.
    :param admin_prefix: paths under it need the admin role, whatever route serves them, so
        an admin operation added without its role declared still isn't open to every key.
    """

    def __init__(
        self, app: ASGIApp, *, keys: KeyRing | None, public: Collection[str], admin_prefix: str
    ) -> None:
        self.app = app
        self._keys = keys
        self._public = frozenset(public)
        self._admin_prefix = admin_prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._keys is None:
            caller: Principal | None = TRUSTED
        else:
            key = self._key(scope, self._keys)
            caller = Principal.of_key(key) if key is not None else None
        path: str = scope["path"]
        if caller is None:
            if path not in self._public:
                await self._unauthorized(scope, receive, send)
                return
            caller = ANONYMOUS
        if self._is_admin_path(path) and not caller.has(Role.ADMIN):
            response = fail(403, FORBIDDEN, "this operation needs a key with the admin role")
            await response(scope, receive, send)
            return
        if caller.read_only and scope["method"] not in _READS:
            response = fail(403, FORBIDDEN, "this key is read-only: it may only read")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE_KEY] = caller
        await self.app(scope, receive, send)

    def _is_admin_path(self, path: str) -> bool:
        return path == self._admin_prefix or path.startswith(self._admin_prefix + "/")

    @staticmethod
    def _key(scope: Scope, keys: KeyRing) -> ApiKey | None:
        token = bearer_token(scope)
        return keys.find(token) if token else None

    @staticmethod
    async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
        presented = bearer_token(scope) is not None
        message = (
            "the API key is not valid"
            if presented
            else "an API key is required: send Authorization: Bearer <key>"
        )
        # RFC 6750: the challenge names the scheme; error="invalid_token" when one was sent.
        challenge = f'{_REALM}, error="invalid_token"' if presented else _REALM
        response = fail(401, UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})
        await response(scope, receive, send)


def bearer_token(scope: Scope) -> str | None:
    """The token of the first ``Authorization: Bearer`` header; ``None`` if there is none."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip()
    return None
