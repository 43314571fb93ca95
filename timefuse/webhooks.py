"""Signing and verifying webhooks the Standard Webhooks way, for receivers of timefuse's posts.

A receiver that shares a ``whsec_...`` secret with timefuse checks each request it gets::

    from timefuse.webhooks import WebhookVerificationError, verify

    try:
        verify(request_body_bytes, request_headers, "whsec_...")
    except WebhookVerificationError as exc:
        return 400, str(exc)

The symmetric signature (``v1``) is HMAC-SHA256, keyed with the base64-decoded secret, over
``f"{webhook-id}.{webhook-timestamp}.{body}"``. The asymmetric one (``v1a``) is an ed25519
signature of the same bytes, made with a ``whsk_...`` signing key; a receiver then holds only
the matching ``whpk_...`` public key and passes that to :func:`verify`. The
``webhook-signature`` header holds one or more space-separated ``<version>,<base64>``
signatures (several while keys are being rotated), and any one of them matching is enough.

Symmetric signatures need the standard library only; asymmetric ones need the
``cryptography`` package (imported only when a ``whsk_``/``whpk_`` key is used).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "PUBLIC_KEY_PREFIX",
    "SECRET_PREFIX",
    "SIGNING_KEY_PREFIX",
    "WebhookVerificationError",
    "decode_secret",
    "load_signing_key",
    "new_secret",
    "new_signing_key",
    "public_key_of",
    "sign",
    "sign_asymmetric",
    "verify",
]

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
# Long enough for a retry to reach a receiver whose clock is a little off, short enough that
# a captured request can't be replayed much later.
DEFAULT_TOLERANCE_SECONDS = 300
_VERSION = "v1"
_ASYMMETRIC_VERSION = "v1a"
_SECRET_BYTES = 32
_ED25519_KEY_BYTES = 32


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook; the message says why."""


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); raw bytes as is.

    :raises ValueError: the secret is empty or not base64.
    """
    if isinstance(secret, bytes):
        key = secret
    else:
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"a webhook secret must be {SECRET_PREFIX}<base64>") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def new_secret() -> str:
    """A fresh random ``whsec_`` secret (32 bytes, the middle of the 24 to 64 allowed)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def new_signing_key() -> tuple[str, str]:
    """A fresh ed25519 key pair: the ``whsk_`` signing key and its ``whpk_`` public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signing_key = SIGNING_KEY_PREFIX + base64.b64encode(seed).decode()
    return signing_key, public_key_of(signing_key)


def public_key_of(signing_key: str) -> str:
    """The ``whpk_`` public key that verifies what the ``whsk_`` ``signing_key`` signs.

    :raises ValueError: not a ``whsk_`` key of 32 base64-encoded bytes.
    """
    raw = _private_key(signing_key).public_key().public_bytes_raw()
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def sign(msg_id: str, timestamp: int, payload: bytes, secret: str | bytes) -> str:
    """The ``v1,<base64>`` signature of one message, as the ``webhook-signature`` header has it.

    :param secret: a ``whsec_...`` secret, or its decoded key bytes.
    """
    digest = _digest(decode_secret(secret), msg_id, timestamp, payload)
    return f"{_VERSION},{base64.b64encode(digest).decode()}"


def sign_asymmetric(
    msg_id: str, timestamp: int, payload: bytes, signing_key: str | Ed25519PrivateKey
) -> str:
    """The ``v1a,<base64>`` ed25519 signature of one message.

    :param signing_key: a ``whsk_...`` key, or the key object :func:`load_signing_key` gives.
    """
    key = _private_key(signing_key) if isinstance(signing_key, str) else signing_key
    signature = key.sign(_signed_bytes(msg_id, timestamp, payload))
    return f"{_ASYMMETRIC_VERSION},{base64.b64encode(signature).decode()}"


def load_signing_key(signing_key: str) -> Ed25519PrivateKey:
    """The key object of a ``whsk_`` signing key, to sign many messages without re-decoding.

    :raises ValueError: not a ``whsk_`` key of 32 base64-encoded bytes.
    """
    return _private_key(signing_key)


def verify(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check that ``payload`` and ``headers`` are a webhook signed with ``secret``, sent lately.

    :param payload: the request body exactly as received, before any JSON parsing.
    :param headers: the request headers; names are matched case-insensitively.
    :param secret: a ``whsec_...`` secret (or its key bytes), which checks ``v1`` signatures,
        or a ``whpk_...`` public key, which checks ``v1a`` ones.
    :param tolerance_seconds: how far ``webhook-timestamp`` may be from ``now``, either way.
    :param now: the current Unix time (default: the system clock).
    :raises WebhookVerificationError: a header is missing or malformed, the timestamp is out of
        tolerance, or no signature matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _required(lowered, "webhook-id")
    timestamp = _timestamp(_required(lowered, "webhook-timestamp"))
    signatures = _required(lowered, "webhook-signature")
    _check_freshness(timestamp, time.time() if now is None else now, tolerance_seconds)
    if isinstance(secret, str) and secret.startswith(PUBLIC_KEY_PREFIX):
        matched = _matches_public_key(secret, msg_id, timestamp, payload, signatures)
    else:
        matched = _matches_secret(secret, msg_id, timestamp, payload, signatures)
    if not matched:
        raise WebhookVerificationError("no signature matches the payload")


def _matches_secret(
    secret: str | bytes, msg_id: str, timestamp: int, payload: bytes, signatures: str
) -> bool:
    try:
        key = decode_secret(secret)
    except ValueError as exc:
        raise WebhookVerificationError(f"unusable secret: {exc}") from None
    expected = _digest(key, msg_id, timestamp, payload)
    return any(hmac.compare_digest(expected, given) for given in _signatures(signatures, _VERSION))


def _matches_public_key(
    public_key: str, msg_id: str, timestamp: int, payload: bytes, signatures: str
) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key = _public_key(public_key)
    except ValueError as exc:
        raise WebhookVerificationError(f"unusable public key: {exc}") from None
    signed = _signed_bytes(msg_id, timestamp, payload)
    for given in _signatures(signatures, _ASYMMETRIC_VERSION):
        try:
            key.verify(given, signed)
        except InvalidSignature:
            continue
        return True
    return False


def _digest(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> bytes:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(payload)  # no concatenated copy of a large body
    return mac.digest()


def _signed_bytes(msg_id: str, timestamp: int, payload: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + payload


def _b64decode(encoded: str, form: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a key must be {form}") from None


def _private_key(signing_key: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not signing_key.startswith(SIGNING_KEY_PREFIX):
        raise ValueError(f"an asymmetric signing key must start with {SIGNING_KEY_PREFIX}")
    encoded = signing_key.removeprefix(SIGNING_KEY_PREFIX)
    seed = _b64decode(encoded, f"{SIGNING_KEY_PREFIX}<base64>")
    if len(seed) != _ED25519_KEY_BYTES:
        raise ValueError(f"a {SIGNING_KEY_PREFIX} key must decode to 32 bytes, not {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_key(public_key: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = _b64decode(public_key.removeprefix(PUBLIC_KEY_PREFIX), f"{PUBLIC_KEY_PREFIX}<base64>")
    if len(raw) != _ED25519_KEY_BYTES:
        raise ValueError(f"a {PUBLIC_KEY_PREFIX} key must decode to 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def _timestamp(text: str) -> int:
    # The specification's timestamp is an integer number of seconds; int() alone would also
    # take "+1_614_265_330" or Unicode digits.
    if not (text.isascii() and text.isdigit()):
        raise WebhookVerificationError(f"webhook-timestamp is not a Unix time: {text[:32]!r}")
    return int(text)


def _check_freshness(timestamp: int, now: float, tolerance_seconds: float) -> None:
    if timestamp < now - tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > now + tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")


def _signatures(header: str, version: str) -> list[bytes]:
    # Other versions and undecodable entries are skipped, not fatal: the header may list
    # signatures this receiver has no key for.
    found = []
    for entry in header.split():
        given, _, encoded = entry.partition(",")
        if given != version:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
