"""Credentials toward receivers: what http delivery adds to a request for its destination.

The entries come from the credentials file (:mod:`timefuse.plugins.http_credentials_file`).
For each request :meth:`HttpCredentials.for_url` gives a :class:`Presenter`, which adds the
entry's headers, names its TLS context, and sends the request through :meth:`Presenter.send`:
for an OAuth 2.0 entry a 401 answer renews the token once and the request goes out once more.

OAuth 2.0 client credentials tokens are fetched with authlib's OAuth 2.0 client (it prepares
the request, authenticates the client, and reads the answer and its errors) over aiohttp, the
one HTTP client of deliveries. A token is cached until shortly before it expires: a tenth of
its lifetime, at most a minute, ahead. Many deliveries waiting for a token share one fetch.

No secret (client secret, password, header value, access token) is ever logged or put in a
delivery's outcome: messages that might echo one, like a token endpoint's error description,
are scrubbed first.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import structlog
from authlib.oauth2.client import OAuth2Client
from yarl import URL

from timefuse.plugins.http_credentials_file import (
    ClientCredentials,
    CredentialsConfig,
    DestinationEntry,
)
from timefuse.plugins.http_settings import HttpSettings

__all__ = ["CredentialsUnavailable", "HttpCredentials", "Presenter", "TokenSource"]

log = structlog.get_logger("timefuse.http")

# How much of a token's lifetime is left when it is renewed ahead of its expiry, at most.
RENEW_AHEAD_FRACTION = 0.1
RENEW_AHEAD_MAX_SECONDS = 60.0
# The most of a token endpoint's error description kept in an outcome.
_DESCRIPTION_LIMIT = 200
_CACHED_URLS = 4096
_TOKEN_ANSWER_LIMIT = 64 * 1024
_REDACTED = "[redacted]"

Send = Callable[[Mapping[str, str]], Awaitable[aiohttp.ClientResponse]]


class CredentialsUnavailable(Exception):
    """The credentials for a destination can't be had now (a token endpoint failed)."""


class Presenter:
    """The credentials of one configured destination, or none (:data:`NO_CREDENTIALS`).

    :param ssl: what aiohttp's ``ssl=`` gets: the destination's context, or ``True`` for the
        default verification.
    """

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self._headers = dict(headers or {})
        self.ssl: ssl.SSLContext | bool = tls if tls is not None else True
        self.tokens = tokens

    def __repr__(self) -> str:
        kinds = [*(["headers"] if self._headers else []), *(["oauth2"] if self.tokens else [])]
        return f"Presenter({', '.join(kinds) or 'none'}, tls={self.ssl is not True})"

    async def headers(self) -> dict[str, str]:
        """The headers to add; :raises CredentialsUnavailable: no token can be had."""
        if self.tokens is None:
            return self._headers
        return {**self._headers, "Authorization": await self.tokens.authorization()}

    async def send(self, request: Send) -> aiohttp.ClientResponse:
        """``request(headers)`` with this destination's headers; after a 401, with a fresh
        token once more (an OAuth 2.0 destination only).

        :raises CredentialsUnavailable: no token can be had.
        """
        headers = await self.headers()
        response = await request(headers)
        if response.status != 401 or self.tokens is None:
            return response
        # The receiver refused the token (revoked, or its keys rotated before the token's
        # expiry): the body of the refusal is of no use, and the connection is let go.
        response.close()
        fresh = await self.tokens.renew(headers["Authorization"])
        return await request({**headers, "Authorization": fresh})


NO_CREDENTIALS = Presenter()


class _TokenClient(OAuth2Client):  # type: ignore[misc]  # authlib has no type hints
    """authlib's OAuth 2.0 client, its token request sent with aiohttp.

    ``_fetch_token`` is the hook authlib's own httpx and requests clients implement; the
    request it is given is complete but for the client authentication, which
    :meth:`ClientAuth.prepare` adds.
    """

    def __init__(self, config: ClientCredentials, session: aiohttp.ClientSession) -> None:
        super().__init__(
            session=None,
            client_id=config.client_id,
            client_secret=config.client_secret,
            token_endpoint_auth_method=config.auth_method,
            scope=config.scope,
        )
        self._http = session

    async def _fetch_token(
        self,
        url: str,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        method: str = "POST",
        **kwargs: Any,
    ) -> dict[str, Any]:
        # A copy: authlib's default headers are one shared dict, and auth adds to them.
        url, prepared, body = auth.prepare(method, url, dict(headers or {}), body)
        async with self._http.post(
            url, data=body.encode(), headers=prepared, allow_redirects=False
        ) as response:
            # A token answer is a few hundred bytes; more is not one worth reading.
            raw = await response.content.read(_TOKEN_ANSWER_LIMIT)
            answer = _Answer(response.status, raw.decode("utf-8", errors="replace"))
        token: dict[str, Any] = self.parse_response_token(answer)
        return token


class _Answer:
    """The token endpoint's answer, as authlib reads one (``status_code``, ``json()``...)."""

    def __init__(self, status: int, text: str) -> None:
        self.status_code = status
        self._text = text

    def json(self) -> Any:
        return json.loads(self._text)

    def raise_for_status(self) -> None:
        # authlib calls this for a 5xx, and for an answer that is not a JSON object.
        if self.status_code >= 400:
            raise CredentialsUnavailable(f"the token endpoint answered HTTP {self.status_code}")
        raise CredentialsUnavailable(
            f"the token endpoint's answer (HTTP {self.status_code}) is not a JSON object"
        )


class _Token:
    def __init__(self, authorization: str, renew_at: float) -> None:
        self.authorization = authorization
        self.renew_at = renew_at


class TokenSource:
    """The OAuth 2.0 client credentials token of one destination entry, cached.

    :param session: the session token requests go through (closed by its owner).
    :param clock: a monotonic clock, for the cache's expiry.
    """

    def __init__(
        self,
        name: str,
        config: ClientCredentials,
        session: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._config = config
        self._session = session
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._secrets = _secret_forms(config.secrets())
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenSource({self._name}, {self._config.token_url!r})"

    async def authorization(self) -> str:
        """``Bearer <token>``: the cached token, or a fresh one when it is about to expire."""
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token.authorization
        async with self._lock:  # one fetch for every delivery waiting for it
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = await self._fetch()
            return token.authorization

    async def renew(self, refused: str) -> str:
        """A fresh token after a receiver refused ``refused``: fetched unless another delivery
        has fetched one since."""
        async with self._lock:
            token = self._token
            if token is None or token.authorization == refused:
                token = await self._fetch()
            return token.authorization

    async def _fetch(self) -> _Token:
        self._token = None
        self.fetches += 1
        client = _TokenClient(self._config, self._session())
        extra = {"audience": self._config.audience} if self._config.audience else {}
        try:
            answer = await client.fetch_token(
                self._config.token_url, grant_type="client_credentials", **extra
            )
            token = self._read(answer)
        except CredentialsUnavailable as exc:
            raise self._unavailable(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise self._unavailable(f"token endpoint unreachable: {_describe(exc)}") from None
        except TimeoutError:
            raise self._unavailable("token endpoint unreachable: timeout") from None
        except Exception as exc:  # authlib's OAuth2Error, and JSON that is not a token
            raise self._unavailable(f"token refused: {_oauth_reason(exc)}") from None
        self._token = token
        log.info("oauth2 token fetched", destination=self._name, fetches=self.fetches)
        return token

    def _read(self, answer: Mapping[str, Any]) -> _Token:
        access_token = answer.get("access_token")
        if not isinstance(access_token, str) or not _is_token_text(access_token):
            raise CredentialsUnavailable("the token endpoint's answer has no usable access_token")
        token_type = answer.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise CredentialsUnavailable("the token endpoint issued a token that is not Bearer")
        now = self._clock()
        expires_in = _seconds(answer.get("expires_in"))
        if expires_in is None:
            renew_at = float("inf")  # renewed only when a receiver refuses it
        else:
            ahead = min(RENEW_AHEAD_MAX_SECONDS, expires_in * RENEW_AHEAD_FRACTION)
            renew_at = now + expires_in - ahead
        return _Token(f"Bearer {access_token}", renew_at)

    def _unavailable(self, reason: str) -> CredentialsUnavailable:
        message = f"credentials of {self._name}: {scrub(reason, self._secrets)}"
        log.warning("oauth2 token not fetched", destination=self._name, reason=message)
        return CredentialsUnavailable(message)


def _is_token_text(value: str) -> bool:
    # RFC 6750's b64token is narrower; this keeps what a header can carry unharmed.
    return bool(value) and value.isascii() and value.isprintable() and " " not in value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _oauth_reason(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    description = getattr(exc, "description", None)
    if isinstance(error, str):
        text = f"{error}: {description}" if description else error
    else:
        text = _describe(exc)
    return text[:_DESCRIPTION_LIMIT]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    forms = {form for s in secrets for form in (s, quote(s, safe=""), quote_plus(s)) if form}
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no partial leftovers


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret replaced by ``[redacted]``."""
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


class HttpCredentials:
    """Every configured destination's :class:`Presenter`, found by URL.

    :meth:`start` opens the session token requests go through; :meth:`stop` closes it.
    """

    def __init__(
        self, config: CredentialsConfig | None, *, connect_timeout: float, total_timeout: float
    ) -> None:
        self._config = config or CredentialsConfig()
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._presenters = {entry.index: self._presenter(entry) for entry in self._config.entries}
        self.for_url = functools.lru_cache(maxsize=_CACHED_URLS)(self._for_url)

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> HttpCredentials:
        return cls(
            settings.credentials,
            connect_timeout=settings.connect_timeout,
            # A token request and the delivery share the attempt's time.
            total_timeout=settings.total_timeout / 2,
        )

    def __repr__(self) -> str:
        return f"HttpCredentials({self._config!r})"

    def token_source(self, index: int) -> TokenSource | None:
        presenter = self._presenters.get(index)
        return presenter.tokens if presenter is not None else None

    async def start(self) -> None:
        if self._session is None and any(p.tokens for p in self._presenters.values()):
            # Token endpoints are the operator's, named in the credentials file: they are
            # reached without the SSRF guard that screens event destinations.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _for_url(self, url: URL) -> Presenter:
        entry = self._config.find(url)
        return NO_CREDENTIALS if entry is None else self._presenters[entry.index]

    def _presenter(self, entry: DestinationEntry) -> Presenter:
        tls = entry.tls.context if entry.tls is not None else None
        auth = entry.auth
        if isinstance(auth, ClientCredentials):
            return Presenter(tls=tls, tokens=TokenSource(entry.name, auth, self._token_session))
        return Presenter(auth.headers() if auth is not None else None, tls=tls)

    def _token_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise CredentialsUnavailable("http delivery is not started")
        return self._session
