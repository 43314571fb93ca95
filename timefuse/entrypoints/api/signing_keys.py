"""The /api/v1/events/admin/signing-keys operations: rotating webhook signing keys at run time.

Keys added here go to the keyring file (``TIMEFUSE_SIGNING_KEYS_FILE``); every process signing
deliveries re-reads it when it changes, so a rotation needs no restart. A key generated here
is shown once, in the answer that creates it; no answer ever shows a secret again. Keys of
``TIMEFUSE_WEBHOOK_SECRETS`` are listed too, but change only with the setting.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.access import principal
from timefuse.entrypoints.api.body import BodyLimits, read_json
from timefuse.entrypoints.api.envelope import ok
from timefuse.entrypoints.api.errors import SERVICE_UNAVAILABLE, ApiError
from timefuse.entrypoints.api.listing import instant_param, invalid
from timefuse.entrypoints.api.operations import Operation
from timefuse.entrypoints.auth import Role
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.signing_keys import (
    ANY_SOURCE,
    MAX_SOURCE_LENGTH,
    KeyringError,
    KeyringUnusable,
    SigningKey,
    SigningKeyring,
    check_secret,
    new_key_id,
    settings_keys,
)
from timefuse.plugins.webhook_signing import keyring_from_settings, merged_secrets
from timefuse.webhooks import SIGNING_KEY_PREFIX, new_secret, new_signing_key

log = structlog.get_logger("timefuse.api")

SIGNING_KEY_NOT_FOUND = "SIGNING_KEY_NOT_FOUND"
SIGNING_KEY_FROM_SETTINGS = "SIGNING_KEY_FROM_SETTINGS"
SIGNING_KEYRING_NOT_CONFIGURED = "SIGNING_KEYRING_NOT_CONFIGURED"

_SHARED_WARNING = (
    'a "*" key signs every source without keys of its own: the receiver of any one of them '
    "can sign requests the others accept"
)

Instant = Annotated[
    str,
    msgspec.Meta(description="ISO-8601 with an offset.", extra_json_schema={"format": "date-time"}),
]
Algorithm = Literal["v1", "v1a"]


class SigningKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key to add. Without ``secret`` one is generated and shown once in the answer."""

    source: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_SOURCE_LENGTH,
            description='The source whose deliveries it signs; "*" for every source without '
            "keys of its own.",
        ),
    ]
    algorithm: Annotated[
        Algorithm | None,
        msgspec.Meta(description="v1: HMAC-SHA256 (whsec_); v1a: ed25519 (whsk_). Default v1."),
    ] = None
    secret: Annotated[
        str | None,
        msgspec.Meta(description="A whsec_ secret or a whsk_ ed25519 key to use as is."),
    ] = None
    not_before: Instant | None = None
    expires_at: Instant | None = None


class SigningKeyDates(msgspec.Struct, forbid_unknown_fields=True):
    """New dates for a key: a field given replaces the old date (null: none), one left out
    keeps it."""

    not_before: Instant | msgspec.UnsetType | None = msgspec.UNSET
    expires_at: Instant | msgspec.UnsetType | None = msgspec.UNSET


class SigningKeyOut(msgspec.Struct, kw_only=True):
    """A key as answers show it: never its secret (a public key is not one)."""

    id: str
    source: str
    algorithm: str
    origin: str
    active: bool
    not_before: datetime | None
    expires_at: datetime | None
    created_at: datetime | None
    public_key: str | None


class NewSigningKeyOut(SigningKeyOut, kw_only=True):
    """A key just added; ``secret`` is the whsec_ secret generated for it, shown this once
    (null when the caller supplied the secret, or for ed25519: receivers need only
    ``public_key``)."""

    secret: str | None


_key_decoder = msgspec.json.Decoder(SigningKeyIn)
_dates_decoder = msgspec.json.Decoder(SigningKeyDates)


class SigningKeysApi:
    """:param keyring: the keyring file; ``None`` when no file is configured (keys can then be
    listed, not changed)."""

    def __init__(
        self, fixed: list[SigningKey], keyring: SigningKeyring | None, limits: BodyLimits
    ) -> None:
        self._fixed = fixed
        self._keyring = keyring
        self._limits = limits

    @classmethod
    def from_settings(cls, settings: HttpSettings | None, limits: BodyLimits) -> SigningKeysApi:
        """The keys of the http delivery type's settings (none without them)."""
        if settings is None:
            return cls([], None, limits)
        fixed = settings_keys(merged_secrets(settings).items())
        return cls(fixed, keyring_from_settings(settings), limits)

    async def list_keys(self, request: Request) -> Response:
        source = request.query_params.get("source")
        now = datetime.now(UTC)
        keys = [*self._fixed, *(self._keyring.current() if self._keyring else ())]
        return ok([_out(k, now) for k in keys if source is None or k.source == source])

    async def add_key(self, request: Request) -> Response:
        body = await read_json(request, _key_decoder, self._limits)
        keyring = self._writable()
        key, shown = _new_key(body)
        try:
            await asyncio.to_thread(keyring.add, key)
        except KeyringError as exc:
            raise invalid([FieldError("request", str(exc))], "key") from None
        except (OSError, KeyringUnusable) as exc:
            raise _unwritable(exc) from None
        caller = principal(request).name
        log.info("signing key added", **_logged(key), key_name=caller)
        message = "key added"
        if shown is not None:
            message += ": its secret is shown this once"
        if key.source == ANY_SOURCE:
            log.warning(_SHARED_WARNING, key_id=key.id)
            message += f"; {_SHARED_WARNING}"
        out = NewSigningKeyOut(**msgspec.structs.asdict(_out(key, key.created_at)), secret=shown)
        return ok(out, 201, message=message)

    async def change_dates(self, request: Request) -> Response:
        key_id = self._changeable_id(request)
        body = await read_json(request, _dates_decoder, self._limits)
        known = self._find(key_id)
        errors: list[FieldError] = []
        not_before = _date("not_before", body.not_before, known.not_before, errors)
        expires_at = _date("expires_at", body.expires_at, known.expires_at, errors)
        if errors:
            raise invalid(errors, "dates")
        keyring = self._writable()
        try:
            changed = await asyncio.to_thread(
                keyring.update, key_id, not_before=not_before, expires_at=expires_at
            )
        except KeyringError as exc:
            raise invalid([FieldError("expires_at", str(exc))], "dates") from None
        except (OSError, KeyringUnusable) as exc:
            raise _unwritable(exc) from None
        if changed is None:  # retired meanwhile, by this process or another
            raise _not_found(key_id)
        log.info("signing key dates changed", **_logged(changed), key_name=principal(request).name)
        return ok(_out(changed, datetime.now(UTC)), message="key dates changed")

    async def retire(self, request: Request) -> Response:
        key_id = self._changeable_id(request)
        keyring = self._writable()
        try:
            removed = await asyncio.to_thread(keyring.remove, key_id)
        except (OSError, KeyringUnusable) as exc:
            raise _unwritable(exc) from None
        if removed is None:
            raise _not_found(key_id)
        log.info("signing key retired", **_logged(removed), key_name=principal(request).name)
        return ok(_out(removed, datetime.now(UTC)), message="key retired: it signs no more")

    def _changeable_id(self, request: Request) -> str:
        key_id: str = request.path_params["key_id"]
        if any(key.id == key_id for key in self._fixed):
            raise ApiError(
                409,
                SIGNING_KEY_FROM_SETTINGS,
                f"key {key_id[:100]!r} comes from TIMEFUSE_WEBHOOK_SECRETS: change the setting "
                "and restart, or move the source to the keyring",
            )
        return key_id

    def _find(self, key_id: str) -> SigningKey:
        keyring = self._writable()
        for key in keyring.current():
            if key.id == key_id:
                return key
        raise _not_found(key_id)

    def _writable(self) -> SigningKeyring:
        if self._keyring is None:
            raise ApiError(
                409,
                SIGNING_KEYRING_NOT_CONFIGURED,
                "keys can be added, changed and retired only with a keyring file: set "
                "TIMEFUSE_SIGNING_KEYS_FILE",
            )
        return self._keyring


def _new_key(body: SigningKeyIn) -> tuple[SigningKey, str | None]:
    """The key to add, and the secret to show once (``None`` when not generated here)."""
    errors: list[FieldError] = []
    if not body.source.strip() or not body.source.isprintable():
        errors.append(FieldError("source", "must not be blank or hold control characters"))
    not_before = instant_param("not_before", body.not_before, errors)
    expires_at = instant_param("expires_at", body.expires_at, errors)
    if not_before and expires_at and expires_at <= not_before:
        errors.append(FieldError("expires_at", "must be after not_before"))
    shown: str | None = None
    if body.secret is not None:
        secret = body.secret
        problem = check_secret(secret)
        if problem is not None:
            errors.append(FieldError("secret", problem))  # the reason, never the secret
        elif body.algorithm and body.algorithm != _algorithm_of(secret):
            given = _algorithm_of(secret)
            errors.append(FieldError("algorithm", f"the secret given is a {given} key"))
    elif body.algorithm == "v1a":
        secret, _public = new_signing_key()
    else:
        secret = shown = new_secret()
    if errors:
        raise invalid(errors, "key")
    key = SigningKey(new_key_id(), body.source, secret, not_before, expires_at, datetime.now(UTC))
    return key, shown


def _algorithm_of(secret: str) -> str:
    return "v1a" if secret.startswith(SIGNING_KEY_PREFIX) else "v1"


def _date(
    name: str,
    given: str | msgspec.UnsetType | None,
    current: datetime | None,
    errors: list[FieldError],
) -> datetime | None:
    if given is msgspec.UNSET:
        return current
    assert not isinstance(given, msgspec.UnsetType)
    return instant_param(name, given, errors)


def _out(key: SigningKey, now: datetime | None) -> SigningKeyOut:
    return SigningKeyOut(
        id=key.id,
        source=key.source,
        algorithm=key.algorithm,
        origin=key.origin,
        active=key.active_at(now or datetime.now(UTC)),
        not_before=key.not_before,
        expires_at=key.expires_at,
        created_at=key.created_at,
        public_key=key.public_key,
    )


def _logged(key: SigningKey) -> dict[str, object]:
    return {
        "key_id": key.id,
        "source": key.source,
        "algorithm": key.algorithm,
        "not_before": key.not_before.isoformat() if key.not_before else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def _not_found(key_id: str) -> ApiError:
    return ApiError(404, SIGNING_KEY_NOT_FOUND, f"no signing key {key_id[:100]!r} in the keyring")


def _unwritable(exc: OSError | KeyringUnusable) -> ApiError:
    reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    return ApiError(503, SERVICE_UNAVAILABLE, f"the keyring file can't be changed: {reason}")


_KEY_ID = {"type": "string", "minLength": 1, "description": "A signing key's id, as listed."}
_SOURCE = {"type": "string", "description": "Only this source's keys."}


def signing_key_operations(api: SigningKeysApi, prefix: str) -> list[Operation]:
    path = prefix + "/signing-keys"
    by_id = path + "/{key_id:path}"
    tag = "admin"
    return [
        Operation(
            "GET", path, api.list_keys, "List webhook signing keys", tag, Role.ADMIN,
            data=list[SigningKeyOut], query={"source": _SOURCE},
            description="Ids, dates and public keys, never a secret: the keys of "
            "TIMEFUSE_WEBHOOK_SECRETS (origin settings) and of the keyring (origin keyring).",
        ),
        Operation(
            "POST", path, api.add_key, "Add a webhook signing key", tag, Role.ADMIN,
            status=201, data=NewSigningKeyOut, body=SigningKeyIn,
            errors=(400, 409, 413, 415, 503),
            description="Every key of a source active at a delivery's time signs it, so a new "
            "key added beside the old one starts an overlap: receivers knowing either accept "
            "every delivery. A generated whsec_ secret is in this answer only.",
        ),
        Operation(
            "PATCH", by_id, api.change_dates, "Change a signing key's dates", tag, Role.ADMIN,
            data=SigningKeyOut, body=SigningKeyDates,
            errors=(400, 404, 409, 413, 415, 503), params={"key_id": _KEY_ID},
            description="Ends an overlap at a set time: give the old key an expires_at.",
        ),
        Operation(
            "DELETE", by_id, api.retire, "Retire a signing key now", tag, Role.ADMIN,
            data=SigningKeyOut, errors=(404, 409, 503), params={"key_id": _KEY_ID},
            description="The key leaves the keyring and signs no more deliveries.",
        ),
    ]  # fmt: skip
