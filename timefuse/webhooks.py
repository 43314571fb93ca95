"""Signing and verifying webhooks the Standard Webhooks way, for receivers of timefuse's posts.

A receiver that shares a ``whsec_...`` secret with timefuse checks each request it gets::

    from timefuse.webhooks import WebhookVerificationError, verify

    try:
        verify(request_body_bytes, request_headers, "whsec_...")
    except WebhookVerificationError as exc:
        return 400, str(exc)

The signature is HMAC-SHA256, keyed with the base64-decoded secret, over
``f"{webhook-id}.{webhook-timestamp}.{body}"``; the ``webhook-signature`` header holds one or more
space-separated ``v1,<base64>`` signatures (several while a secret is being rotated), and any one
of them matching is enough. Standard library only, so receivers need nothing else installed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "decode_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"
# Long enough for a retry to reach a receiver whose clock is a little off, short enough that
# a captured request can't be replayed much later.
DEFAULT_TOLERANCE_SECONDS = 300
_VERSION = "v1"


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook; the message says why."""


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); raw bytes as is.

    :raises ValueError: the secret is empty or not base64.
    """
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"a webhook secret must be {SECRET_PREFIX}<base64>") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(msg_id: str, timestamp: int, payload: bytes, secret: str | bytes) -> str:
    """The ``v1,<base64>`` signature of one message, as the ``webhook-signature`` header has it.

    :param secret: a ``whsec_...`` secret, or its decoded key bytes.
    """
    digest = _digest(decode_secret(secret), msg_id, timestamp, payload)
    return f"{_VERSION},{base64.b64encode(digest).decode()}"


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
    try:
        key = decode_secret(secret)
    except ValueError as exc:
        raise WebhookVerificationError(f"unusable secret: {exc}") from None
    expected = _digest(key, msg_id, timestamp, payload)
    if not any(hmac.compare_digest(expected, given) for given in _v1_signatures(signatures)):
        raise WebhookVerificationError("no signature matches the payload")


def _digest(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> bytes:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(payload)  # no concatenated copy of a large body
    return mac.digest()


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


def _v1_signatures(header: str) -> list[bytes]:
    # Other versions (v1a, asymmetric) and undecodable entries are skipped, not fatal: the
    # header may list signatures this receiver has no key for.
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != _VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
