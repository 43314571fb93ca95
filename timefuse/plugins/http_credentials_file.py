"""The credentials file: what http delivery presents to which receiver.

``TIMEFUSE_HTTP_CREDENTIALS_FILE`` names a TOML file the operator controls; events never carry
credentials. Each ``[[destinations]]`` entry has a ``match`` (a host, a host:port, or an http(s)
URL prefix; the most specific wins, see :mod:`timefuse.plugins.destination_match`), at most one
of ``header``, ``basic`` and ``oauth2_client_credentials``, and optionally ``tls``::

    [[destinations]]
    match = "https://hooks.partner.example/timefuse/"
    header = { name = "Authorization", value_file = "/run/secrets/partner-token" }

    [[destinations]]
    match = "billing.internal:8443"
    basic = { username = "timefuse", password_file = "/run/secrets/billing" }
    tls = { cert_file = "client.crt", key_file = "client.key", ca_file = "billing-ca.pem" }

    [[destinations]]
    match = "api.example.com"
    [destinations.oauth2_client_credentials]
    token_url = "https://auth.example.com/oauth2/token"
    client_id = "timefuse"
    client_secret_file = "/run/secrets/example-client-secret"
    scope = "webhooks:write"

Every secret may be given inline or, better, as ``<name>_file`` (relative paths are relative to
the credentials file). Everything is read and checked at start-up, with errors naming the entry
and never quoting a secret; the reprs of what is loaded leave secrets out.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from yarl import URL

from timefuse.plugins.destination_match import DestinationMatch, MatchTable, parse_match

__all__ = [
    "BasicAuth",
    "ClientCredentials",
    "ClientTls",
    "CredentialsConfig",
    "CredentialsError",
    "DestinationEntry",
    "HeaderAuth",
    "load_credentials",
]

VARIABLE = "TIMEFUSE_HTTP_CREDENTIALS_FILE"

# Headers timefuse sets itself, or that frame the request: a credential must not replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type", "content-length", "transfer-encoding", "connection", "host",
        "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature",
        "timefuse-attempt",
    }
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class CredentialsError(ValueError):
    """The credentials file can't be used; the message names the entry, never a secret."""


@dataclass(frozen=True, slots=True)
class HeaderAuth:
    """One header sent as is (``Authorization: Bearer ...``, ``X-Api-Key: ...``)."""

    name: str
    value: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        return {self.name: self.value}

    def secrets(self) -> tuple[str, ...]:
        return (self.value,)


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        encoded = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}

    def secrets(self) -> tuple[str, ...]:
        return self.password, self.headers()["Authorization"].removeprefix("Basic ")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """OAuth 2.0 client credentials grant (RFC 6749 section 4.4) against ``token_url``."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None
    auth_method: str = "client_secret_basic"

    def secrets(self) -> tuple[str, ...]:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return self.client_secret, basic


@dataclass(frozen=True, slots=True)
class ClientTls:
    """A client certificate and key, and optionally the only CAs trusted for the receiver."""

    cert_file: str | None
    key_file: str | None
    ca_file: str | None
    context: ssl.SSLContext = field(repr=False, compare=False)


Auth = HeaderAuth | BasicAuth | ClientCredentials


@dataclass(frozen=True, slots=True)
class DestinationEntry:
    index: int
    match: DestinationMatch
    auth: Auth | None
    tls: ClientTls | None

    @property
    def name(self) -> str:
        return f"destination {self.index} ({self.match.text!r})"


@dataclass(frozen=True)
class CredentialsConfig:
    """The loaded file: its entries, by match. Its repr names the file and counts entries."""

    path: str = ""
    entries: tuple[DestinationEntry, ...] = ()
    table: MatchTable[DestinationEntry] = field(
        default_factory=lambda: MatchTable(()), repr=False, compare=False
    )

    def __repr__(self) -> str:
        return f"CredentialsConfig({self.path!r}, {len(self.entries)} destination(s))"

    def find(self, url: URL) -> DestinationEntry | None:
        return self.table.find(url)

    def secrets(self) -> tuple[str, ...]:
        """Every secret the file holds (in the forms sent), for scrubbing messages."""
        return tuple(s for e in self.entries if e.auth is not None for s in e.auth.secrets())


# -- the TOML shape: unknown fields are refused, so a misspelt one can't be silently ignored --


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: str | None = None
    value_file: str | None = None


class _Basic(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str | None = None
    password_file: str | None = None


class _OAuth2(msgspec.Struct, forbid_unknown_fields=True):
    token_url: str
    client_id: str
    client_secret: str | None = None
    client_secret_file: str | None = None
    scope: str | list[str] | None = None
    audience: str | None = None
    auth_method: str = "client_secret_basic"


class _Tls(msgspec.Struct, forbid_unknown_fields=True):
    cert_file: str | None = None
    key_file: str | None = None
    key_password_file: str | None = None
    ca_file: str | None = None


class _Destination(msgspec.Struct, forbid_unknown_fields=True):
    match: str
    header: _Header | None = None
    basic: _Basic | None = None
    oauth2_client_credentials: _OAuth2 | None = None
    tls: _Tls | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    destinations: list[_Destination] = msgspec.field(default_factory=list)


def load_credentials(path: Path) -> CredentialsConfig:
    """Read and check the credentials file, its secret files and TLS files.

    :raises CredentialsError: naming the file and the entry at fault.
    """
    where = f"{VARIABLE} ({path})"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{where}: can't read it: {exc.strerror or exc}") from None
    try:
        parsed = msgspec.convert(tomllib.loads(raw.decode("utf-8")), _File)
    except (ValueError, msgspec.ValidationError) as exc:
        # TOML errors give a line and column, msgspec a path ("$.destinations[0].basic");
        # neither quotes a value.
        raise CredentialsError(f"{where}: {exc}") from None
    base = path.parent
    entries = []
    for index, raw_entry in enumerate(parsed.destinations):
        at = f"{where}: destination {index} ({raw_entry.match!r})"
        try:
            entries.append(_entry(index, raw_entry, base))
        except CredentialsError as exc:
            raise CredentialsError(f"{at}: {exc}") from None
    try:
        table = MatchTable((entry.match, entry) for entry in entries)
    except ValueError as exc:
        raise CredentialsError(f"{where}: {exc}") from None
    return CredentialsConfig(str(path), tuple(entries), table)


def _entry(index: int, raw: _Destination, base: Path) -> DestinationEntry:
    try:
        match = parse_match(raw.match)
    except ValueError as exc:
        raise CredentialsError(f"match {exc}") from None
    given = [raw.header, raw.basic, raw.oauth2_client_credentials]
    if sum(part is not None for part in given) > 1:
        raise CredentialsError("give at most one of header, basic and oauth2_client_credentials")
    auth: Auth | None = None
    if raw.header is not None:
        auth = _header(raw.header, base)
    elif raw.basic is not None:
        auth = _basic(raw.basic, base)
    elif raw.oauth2_client_credentials is not None:
        auth = _oauth2(raw.oauth2_client_credentials, base)
    tls = _tls(raw.tls, base) if raw.tls is not None else None
    if auth is None and tls is None:
        raise CredentialsError("needs header, basic, oauth2_client_credentials or tls")
    return DestinationEntry(index, match, auth, tls)


def _secret(part: str, name: str, inline: str | None, file: str | None, base: Path) -> str:
    if (inline is None) == (file is None):
        raise CredentialsError(f"{part}: give either {name} or {name}_file")
    if inline is not None:
        value = inline
    else:
        assert file is not None
        value = _read(f"{part}: {name}_file", base / file).strip()
    if not value:
        raise CredentialsError(f"{part}: {name} is empty")
    if any(ch in value for ch in "\r\n\x00"):
        raise CredentialsError(f"{part}: {name} must be one line")
    return value


def _read(what: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialsError(f"{what}: can't read {str(path)!r}: {reason}") from None


def _header(raw: _Header, base: Path) -> HeaderAuth:
    if not _TOKEN.fullmatch(raw.name):
        raise CredentialsError(f"header: name {raw.name[:80]!r} is not a valid header name")
    if raw.name.lower() in RESERVED_HEADERS:
        raise CredentialsError(f"header: {raw.name} is set by timefuse itself")
    return HeaderAuth(raw.name, _secret("header", "value", raw.value, raw.value_file, base))


def _basic(raw: _Basic, base: Path) -> BasicAuth:
    if not raw.username or ":" in raw.username:
        raise CredentialsError("basic: username must be non-empty, without ':'")
    password = _secret("basic", "password", raw.password, raw.password_file, base)
    return BasicAuth(raw.username, password)


def _oauth2(raw: _OAuth2, base: Path) -> ClientCredentials:
    part = "oauth2_client_credentials"
    _check_token_url(part, raw.token_url)
    if not raw.client_id.strip():
        raise CredentialsError(f"{part}: client_id must not be blank")
    if raw.auth_method not in _AUTH_METHODS:
        raise CredentialsError(f"{part}: auth_method must be one of {', '.join(_AUTH_METHODS)}")
    secret = _secret(part, "client_secret", raw.client_secret, raw.client_secret_file, base)
    scope = " ".join(raw.scope) if isinstance(raw.scope, list) else raw.scope
    return ClientCredentials(
        raw.token_url, raw.client_id, secret, scope or None, raw.audience, raw.auth_method
    )


def _check_token_url(part: str, text: str) -> None:
    try:
        url = URL(text)
    except (ValueError, IndexError):  # IndexError: yarl, on some malformed authorities
        raise CredentialsError(f"{part}: token_url is not a URL") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise CredentialsError(f"{part}: token_url must be an absolute https:// URL")
    # The client secret goes to this URL: in clear text only to this very machine.
    if url.scheme == "http" and not _is_loopback(url.raw_host):
        raise CredentialsError(f"{part}: token_url must be https:// (it receives the secret)")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls(raw: _Tls, base: Path) -> ClientTls:
    if (raw.cert_file is None) != (raw.key_file is None):
        raise CredentialsError("tls: give cert_file and key_file together")
    if raw.cert_file is None and raw.ca_file is None:
        raise CredentialsError("tls: give cert_file and key_file, ca_file, or both")
    ca_file = str(base / raw.ca_file) if raw.ca_file else None
    try:
        # With a CA bundle, only it is trusted for this receiver; otherwise the system's CAs.
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"tls: can't load ca_file: {_ssl_reason(exc)}") from None
    cert_file = key_file = None
    if raw.cert_file is not None and raw.key_file is not None:
        cert_file, key_file = str(base / raw.cert_file), str(base / raw.key_file)
        password = None
        if raw.key_password_file is not None:
            password = _read("tls: key_password_file", base / raw.key_password_file).strip()
        try:
            context.load_cert_chain(cert_file, key_file, password=password)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(
                f"tls: can't load cert_file and key_file (a pair, PEM): {_ssl_reason(exc)}"
            ) from None
    return ClientTls(cert_file, key_file, ca_file, context)


def _ssl_reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
