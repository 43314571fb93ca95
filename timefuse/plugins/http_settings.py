"""The settings of the built-in ``http`` delivery type, declared through the plugin hook.

Files named here (credentials, webhook secrets) are read and checked at start-up, so a bad one
stops the process with a message naming the variable and the entry; no message quotes a secret.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from timefuse.config import Section, comma_list, number, setting
from timefuse.plugins.http_credentials_file import CredentialsConfig, load_credentials
from timefuse.plugins.signing_keys import load_keyring
from timefuse.webhooks import SECRET_PREFIX, decode_secret

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> tuple[IpNetwork, ...]:
    """A comma list of CIDR networks."""
    found = []
    for part in comma_list(text):
        try:
            # strict: "10.0.0.5/8" is more likely a typo than a wish to allow all of 10/8.
            found.append(ipaddress.ip_network(part, strict=True))
        except ValueError as exc:
            raise ValueError(
                "must be a comma list of CIDR networks (e.g. 10.0.0.0/8,fd00::/8), "
                f"got {part!r}: {exc}"
            ) from None
    return tuple(found)


# The specification asks for 24 to 64 random bytes; shorter keys are guessable.
_SECRET_BYTES = range(24, 65)


class WebhookSecrets(Mapping[str, tuple[str, ...]]):
    """Webhook signing secrets by event source (``*``: any other source).

    Its repr names sources only: settings end up in logs and tracebacks, secrets must not.
    """

    def __init__(self, by_source: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._by_source = dict(by_source or {})

    def __getitem__(self, source: str) -> tuple[str, ...]:
        return self._by_source[source]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_source)

    def __len__(self) -> int:
        return len(self._by_source)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s!r}: {len(v)} secret(s)" for s, v in self._by_source.items())
        return f"WebhookSecrets({{{counts}}})"


def webhook_secrets(text: str) -> WebhookSecrets:
    """``{"billing": ["whsec_new", "whsec_old"], "*": "whsec_..."}``.

    JSON because a secret's base64 may hold "+", "/" and "=", which rule out a simpler
    key=value list. Messages never quote a secret, only where it sits.
    """
    if not text.strip():
        return WebhookSecrets()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object of sources to secrets")
    return WebhookSecrets(
        {source: _source_secrets(source, secrets) for source, secrets in value.items()}
    )


def _source_secrets(source: str, secrets: object) -> tuple[str, ...]:
    listed = [secrets] if isinstance(secrets, str) else secrets
    if not source or not isinstance(listed, list):
        raise ValueError(
            f"source {source!r} must map to a {SECRET_PREFIX} secret or a list of them"
        )
    for index, secret in enumerate(listed):
        where = f"secret {index} of source {source!r}"
        if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"{where} must start with {SECRET_PREFIX}")
        try:
            key = decode_secret(secret)
        except ValueError:
            raise ValueError(f"{where} must be {SECRET_PREFIX} followed by base64") from None
        if len(key) not in _SECRET_BYTES:
            raise ValueError(f"{where} must decode to 24 to 64 bytes, not {len(key)}")
    return tuple(listed)


def webhook_secrets_file(text: str) -> WebhookSecrets:
    """The path of a JSON file in the :func:`webhook_secrets` format."""
    if not text.strip():
        return WebhookSecrets()
    try:
        content = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"can't read {text!r}: {exc}") from None
    return webhook_secrets(content)


def credentials_file(text: str) -> CredentialsConfig:
    """The path of the credentials TOML file (:mod:`http_credentials_file`)."""
    if not text.strip():
        return CredentialsConfig()
    return load_credentials(Path(text))


def signing_keys_file(text: str) -> str:
    """The path of the signing keyring, checked now (it is re-read whenever it changes)."""
    if text.strip():
        load_keyring(Path(text))
    return text.strip()


@dataclass(frozen=True)
class HttpSettings(Section, prefix="TIMEFUSE_", title="http delivery"):
    """What the ``http`` delivery type reads: timeouts, the SSRF guard's allowed networks,
    credentials toward receivers and webhook signing keys."""

    connect_timeout: float = setting(
        env="TIMEFUSE_HTTP_CONNECT_TIMEOUT_SECONDS",
        default="5",
        help="HTTP delivery connect timeout.",
        parse=number(),
    )
    total_timeout: float = setting(
        env="TIMEFUSE_HTTP_TIMEOUT_SECONDS",
        default="30",
        help="HTTP delivery total timeout.",
        parse=number(),
    )
    allowed_networks: tuple[IpNetwork, ...] = setting(
        env="TIMEFUSE_HTTP_ALLOWED_NETWORKS",
        default="",
        help="Comma list of CIDRs HTTP delivery may reach besides public addresses (e.g. "
        "10.0.0.0/8).",
        parse=networks,
    )
    webhook_secrets: Mapping[str, tuple[str, ...]] = setting(
        env="TIMEFUSE_WEBHOOK_SECRETS",
        default="",
        help='JSON {"<source>": ["whsec_...", ...], "*": [...]}: secrets signing HTTP deliveries.',
        parse=webhook_secrets,
    )
    webhook_secrets_file: Mapping[str, tuple[str, ...]] = setting(
        env="TIMEFUSE_WEBHOOK_SECRETS_FILE",
        default="",
        help="Path of a JSON file in the TIMEFUSE_WEBHOOK_SECRETS format, read at start-up.",
        parse=webhook_secrets_file,
    )
    credentials: CredentialsConfig = setting(
        env="TIMEFUSE_HTTP_CREDENTIALS_FILE",
        default="",
        help="TOML file of credentials per HTTP destination (header, basic, OAuth 2.0 client "
        "credentials, client TLS), read at start-up; see docs/credentials.md.",
        parse=credentials_file,
    )
    signing_keys_file: str = setting(
        env="TIMEFUSE_SIGNING_KEYS_FILE",
        default="",
        help="JSON keyring of dated webhook signing keys per source, managed through the "
        "admin API and re-read by every process when it changes (unset: no rotation at run "
        "time).",
        parse=signing_keys_file,
    )
