"""The console's session: a signed cookie naming the signed-in key, and the CSRF token.

The cookie is signed (not encrypted) with itsdangerous, so nobody can forge or alter one; it
holds no secret worth reading: a random CSRF token and the SHA-256 of the key (the keys file
holds the same hash, and a hash gives nobody the key). It is HttpOnly (scripts can't read it),
SameSite=Strict (another site's pages can't make the browser send it), Secure when the console
is served over https, and scoped to the console's path.

Every form carries the session's CSRF token; a POST without the token of its own session is
refused, whatever the cookie says. Visitors get a session (and a token) before signing in, so
the sign-in form is protected too, and signing in issues a new token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "timefuse_console"
# A working day; the keys themselves don't expire, a forgotten browser tab should.
SESSION_SECONDS = 12 * 3600
_SALT = "timefuse.console.session"
_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """``key_hash``: the SHA-256 of the signed-in key; ``None`` before signing in."""

    csrf: str
    key_hash: str | None = None

    def token_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            self.csrf.encode("ascii"), presented.encode("utf-8", "replace")
        )


def new_session(key_hash: str | None = None) -> Session:
    return Session(secrets.token_urlsafe(_TOKEN_BYTES), key_hash)


class Sessions:
    """Reads and writes session cookies signed with ``secret``.

    :param path: the path the cookie is sent for (the console's mount point).
    """

    def __init__(self, secret: str, path: str) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._path = path

    def read(self, request: Request) -> Session | None:
        """The request's session; ``None`` when it has none, or a forged or expired one."""
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > 1024:
            return None
        try:
            data = self._signer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        csrf, key_hash = data.get("csrf"), data.get("key")
        if not isinstance(csrf, str) or not (key_hash is None or isinstance(key_hash, str)):
            return None
        return Session(csrf, key_hash)

    def write(self, response: Response, session: Session, request: Request) -> None:
        value = self._signer.dumps({"csrf": session.csrf, "key": session.key_hash})
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS,
            path=self._path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE,
            path=self._path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
