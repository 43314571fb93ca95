"""Standard Webhooks signatures on http deliveries, with per-source keys and their dates.

Keys come from ``TIMEFUSE_WEBHOOK_SECRETS`` and ``TIMEFUSE_WEBHOOK_SECRETS_FILE`` (secrets
without dates; both may be set and their secrets add up) and from the keyring file of
``TIMEFUSE_SIGNING_KEYS_FILE`` (dated keys, managed through the admin API while running; see
:mod:`timefuse.plugins.signing_keys`). A source's own keys replace the ``*`` keys, so
``{"*": [...], "legacy": []}`` signs everything but ``legacy``.

Every key of the source that is active at the delivery's timestamp signs it: during a rotation
the ``webhook-signature`` header carries one signature per key (``v1`` for a ``whsec_``
secret, ``v1a`` for a ``whsk_`` ed25519 key), and a receiver that knows any one of them
accepts the request.

The ``*`` entry is one secret shared by every source: the receiver of one source can then
sign requests that another source's receiver accepts. A warning at start-up says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.signing_keys import (
    ANY_SOURCE,
    SigningKey,
    SigningKeyring,
    settings_keys,
)
from timefuse.webhooks import decode_secret, load_signing_key, sign, sign_asymmetric

__all__ = ["ANY_SOURCE", "WebhookSigner", "keyring_from_settings", "merged_secrets"]

log = structlog.get_logger("timefuse.signing")

_Sign = Callable[[str, int, bytes], str]


@dataclass(frozen=True, slots=True)
class _Signer:
    """A key decoded once, with its dates as Unix times: deliveries only run the signing."""

    start: float
    end: float
    sign: _Sign

    @classmethod
    def of(cls, key: SigningKey) -> _Signer:
        start = key.not_before.timestamp() if key.not_before else float("-inf")
        end = key.expires_at.timestamp() if key.expires_at else float("inf")
        return cls(start, end, _signing_function(key.secret))

    def active_at(self, timestamp: int) -> bool:
        return self.start <= timestamp < self.end


def _signing_function(secret: str) -> _Sign:
    if secret.startswith("whsk_"):
        private = load_signing_key(secret)
        return lambda msg_id, ts, payload: sign_asymmetric(msg_id, ts, payload, private)
    key = decode_secret(secret)
    return lambda msg_id, ts, payload: sign(msg_id, ts, payload, key)


def _by_source(keys: Iterable[SigningKey]) -> dict[str, tuple[_Signer, ...]]:
    grouped: dict[str, list[_Signer]] = {}
    for key in keys:
        grouped.setdefault(key.source, []).append(_Signer.of(key))
    return {source: tuple(signers) for source, signers in grouped.items()}


class WebhookSigner:
    """Signs http deliveries for the sources that have keys; others go out unsigned.

    :param secrets: undated ``whsec_...``/``whsk_...`` secrets by source, ``*`` for sources
        not listed; a source listed with no secret is not signed.
    :param keyring: dated keys managed at run time, re-read when its file changes.
    """

    def __init__(
        self, secrets: Mapping[str, Sequence[str]], keyring: SigningKeyring | None = None
    ) -> None:
        self._fixed = _by_source(settings_keys(secrets.items()))
        # A source listed with an empty list still replaces "*": it is not signed at all.
        for source in secrets:
            self._fixed.setdefault(source, ())
        self._keyring = keyring
        self._generation = -1
        self._reported_error: str | None = None
        self._keys = self._fixed

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> WebhookSigner:
        """The signer of the configured keys; warns (once, at start-up) about a ``*`` key."""
        signer = cls(merged_secrets(settings), keyring_from_settings(settings))
        if signer.has_shared_key:
            log.warning(
                'a "*" webhook signing key is configured: every source without keys of its '
                "own is signed with it, so the receiver of any one of those sources holds a "
                "key that signs requests the others accept. Give each source its own key",
                settings="TIMEFUSE_WEBHOOK_SECRETS, TIMEFUSE_SIGNING_KEYS_FILE",
            )
        return signer

    @property
    def has_shared_key(self) -> bool:
        """Whether a ``*`` key signs for sources without keys of their own."""
        return bool(self._current().get(ANY_SOURCE))

    def signature(self, source: str, msg_id: str, timestamp: int, payload: bytes) -> str | None:
        """The ``webhook-signature`` header for one delivery, or ``None`` if unsigned."""
        keys = self._current()
        signers = keys.get(source)
        if signers is None:
            signers = keys.get(ANY_SOURCE, ())
        signatures = [s.sign(msg_id, timestamp, payload) for s in signers if s.active_at(timestamp)]
        return " ".join(signatures) if signatures else None

    def _current(self) -> Mapping[str, tuple[_Signer, ...]]:
        keyring = self._keyring
        if keyring is None:
            return self._keys
        keys = keyring.current()
        if keyring.error != self._reported_error:
            self._reported_error = keyring.error
            if keyring.error is not None:
                log.error(
                    "signing keyring not reloaded; the keys read before still sign",
                    path=str(keyring.path),
                    reason=keyring.error,
                )
        if keyring.generation != self._generation:
            merged = dict(self._fixed)
            for source, signers in _by_source(keys).items():
                merged[source] = merged.get(source, ()) + signers
            self._keys, self._generation = merged, keyring.generation
        return self._keys


def merged_secrets(settings: HttpSettings) -> dict[str, list[str]]:
    """The secrets of ``TIMEFUSE_WEBHOOK_SECRETS`` and its file, by source, without repeats."""
    merged: dict[str, list[str]] = {}
    for secrets in (settings.webhook_secrets, settings.webhook_secrets_file):
        for source, listed in secrets.items():
            known = merged.setdefault(source, [])
            known.extend(secret for secret in listed if secret not in known)
    return merged


def keyring_from_settings(settings: HttpSettings) -> SigningKeyring | None:
    path = settings.signing_keys_file.strip()
    return SigningKeyring(Path(path)) if path else None
