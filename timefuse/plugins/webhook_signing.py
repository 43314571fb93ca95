"""Standard Webhooks signatures on http deliveries, with per-source secrets from settings.

Secrets come from ``TIMEFUSE_WEBHOOK_SECRETS`` and ``TIMEFUSE_WEBHOOK_SECRETS_FILE`` (both
may be set; their secrets add up). A source's own entry replaces the ``*`` entry, so
``{"*": [...], "legacy": []}`` signs everything but ``legacy``. Every secret of a source signs
every delivery: during a rotation the ``webhook-signature`` header carries one signature per
secret, and a receiver that knows either one accepts the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from timefuse.config import Settings
from timefuse.webhooks import decode_secret, sign

__all__ = ["ANY_SOURCE", "WebhookSigner"]

ANY_SOURCE = "*"


class WebhookSigner:
    """Signs http deliveries for the sources that have secrets; others go out unsigned.

    :param secrets: ``whsec_...`` secrets by source, ``*`` for sources not listed.
    """

    def __init__(self, secrets: Mapping[str, Sequence[str]]) -> None:
        # Decoded once: deliveries only run the HMAC.
        keys = {source: tuple(map(decode_secret, listed)) for source, listed in secrets.items()}
        self._default = keys.pop(ANY_SOURCE, ())
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSigner:
        merged: dict[str, list[str]] = {}
        for secrets in (settings.webhook_secrets, settings.webhook_secrets_file):
            for source, listed in secrets.items():
                known = merged.setdefault(source, [])
                known.extend(secret for secret in listed if secret not in known)
        return cls(merged)

    def signature(self, source: str, msg_id: str, timestamp: int, payload: bytes) -> str | None:
        """The ``webhook-signature`` header for one delivery, or ``None`` if unsigned."""
        keys = self._keys.get(source, self._default)
        if not keys:
            return None
        return " ".join(sign(msg_id, timestamp, payload, key) for key in keys)
