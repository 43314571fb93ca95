"""Signing keys with dates, and the keyring file that holds the keys added while running.

A :class:`SigningKey` signs the http deliveries of one source (or ``*``: of every source that
has no key of its own) between ``not_before`` and ``expires_at``. Keys come from two places:

- ``TIMEFUSE_WEBHOOK_SECRETS`` (and ``_FILE``): secrets without dates, fixed until a restart;
- the keyring file of ``TIMEFUSE_SIGNING_KEYS_FILE``: keys added, changed and retired through
  the admin API. The process that changes it rewrites it atomically (a temporary file renamed
  over it, under an advisory lock, so API processes sharing it don't lose each other's
  changes); every process re-reads it when it changes, so a rotation needs no restart.

The file is JSON (``{"keys": [{"id", "source", "secret", "not_before", "expires_at",
"created_at"}]}``), written with mode 0600 since it holds secrets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

import msgspec

from timefuse.webhooks import (
    SECRET_PREFIX,
    SIGNING_KEY_PREFIX,
    decode_secret,
    load_signing_key,
    public_key_of,
)

__all__ = [
    "ANY_SOURCE",
    "KeyringError",
    "KeyringUnusable",
    "SigningKey",
    "SigningKeyring",
    "check_secret",
    "load_keyring",
    "new_key_id",
]

ANY_SOURCE = "*"
SETTINGS_ORIGIN = "settings"
KEYRING_ORIGIN = "keyring"
MAX_SOURCE_LENGTH = 100

# The specification asks for 24 to 64 random bytes; shorter keys are guessable.
SECRET_BYTES = range(24, 65)
_KEY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_REREAD_SECONDS = 30.0


class KeyringError(ValueError):
    """A key or the keyring file is unusable; the message names the key, never its secret."""


class KeyringUnusable(Exception):
    """The keyring file on disk can't be read or parsed, so it can't be changed."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key of one source. Its repr leaves the secret out.

    :param secret: ``whsec_...`` (``v1``, HMAC) or ``whsk_...`` (``v1a``, ed25519).
    :param not_before: signs from then on (``None``: since ever).
    :param expires_at: signs until then, excluded (``None``: until retired).
    :param origin: ``settings`` (fixed until a restart) or ``keyring`` (managed at run time).
    """

    id: str
    source: str
    secret: str = field(repr=False)
    not_before: datetime | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    origin: str = KEYRING_ORIGIN

    @property
    def algorithm(self) -> str:
        return "v1a" if self.secret.startswith(SIGNING_KEY_PREFIX) else "v1"

    @property
    def public_key(self) -> str | None:
        """The ``whpk_`` key receivers verify with, for an asymmetric key; never a secret."""
        return public_key_of(self.secret) if self.algorithm == "v1a" else None

    def active_at(self, instant: datetime) -> bool:
        if self.not_before is not None and instant < self.not_before:
            return False
        return self.expires_at is None or instant < self.expires_at


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def check_secret(secret: str) -> str | None:
    """What is wrong with ``secret`` as a signing secret, or ``None``; never quotes it."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = decode_secret(secret)
        except ValueError:
            return f"must be {SECRET_PREFIX} followed by base64"
        if len(key) not in SECRET_BYTES:
            return f"must decode to 24 to 64 bytes, not {len(key)}"
        return None
    if secret.startswith(SIGNING_KEY_PREFIX):
        try:
            load_signing_key(secret)
        except ValueError as exc:
            return str(exc)
        return None
    return f"must start with {SECRET_PREFIX} (HMAC) or {SIGNING_KEY_PREFIX} (ed25519)"


def check_key(key: SigningKey) -> None:
    """:raises KeyringError: naming the key and what is wrong with it."""
    where = f"key {key.id!r}"
    if not _KEY_ID.fullmatch(key.id):
        raise KeyringError(f"key id {key.id[:80]!r} must be 1 to 64 of A-Z a-z 0-9 _ . : -")
    if not key.source.strip() or len(key.source) > MAX_SOURCE_LENGTH:
        raise KeyringError(f"{where}: source must be 1 to {MAX_SOURCE_LENGTH} characters")
    if not key.source.isprintable():
        raise KeyringError(f"{where}: source must not contain control characters")
    problem = check_secret(key.secret)
    if problem is not None:
        raise KeyringError(f"{where}: secret {problem}")
    for name, instant in (("not_before", key.not_before), ("expires_at", key.expires_at)):
        if instant is not None and instant.utcoffset() is None:
            raise KeyringError(f"{where}: {name} needs a UTC offset")
    if key.not_before and key.expires_at and key.expires_at <= key.not_before:
        raise KeyringError(f"{where}: expires_at must be after not_before")


# -- the file --------------------------------------------------------------------------------

_Instant = Annotated[datetime, msgspec.Meta(tz=True)]


class _Entry(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    source: str
    secret: str
    not_before: _Instant | None = None
    expires_at: _Instant | None = None
    created_at: _Instant | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[_Entry] = msgspec.field(default_factory=list)


def load_keyring(path: Path) -> tuple[SigningKey, ...]:
    """The keys of the keyring file at ``path``; none when it doesn't exist yet.

    :raises KeyringError: it can't be read, isn't the format, or a key is unusable.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise KeyringError(f"{path}: can't read it: {exc.strerror or exc}") from None
    return _parse(path, raw)


def _parse(path: Path, raw: bytes) -> tuple[SigningKey, ...]:
    if not raw.strip():
        return ()
    try:
        parsed = msgspec.json.decode(raw, type=_File)
    except msgspec.DecodeError as exc:
        # msgspec names where the problem is ("at `$.keys[0].secret`"), not the value.
        raise KeyringError(f"{path}: {exc}") from None
    keys = tuple(
        SigningKey(e.id, e.source, e.secret, e.not_before, e.expires_at, e.created_at)
        for e in parsed.keys
    )
    seen: set[str] = set()
    for key in keys:
        try:
            check_key(key)
        except KeyringError as exc:
            raise KeyringError(f"{path}: {exc}") from None
        if key.id in seen:
            raise KeyringError(f"{path}: two keys have the id {key.id!r}")
        seen.add(key.id)
    return keys


def _encode(keys: Iterable[SigningKey]) -> bytes:
    entries = [
        _Entry(k.id, k.source, k.secret, k.not_before, k.expires_at, k.created_at) for k in keys
    ]
    # Indented: operators read (and may edit) the file.
    return msgspec.json.format(msgspec.json.encode(_File(entries)), indent=2) + b"\n"


def _write_atomically(path: Path, content: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp creates it 0600
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


class SigningKeyring:
    """The keyring file, as this process last read it, and the changes it makes to it.

    :meth:`current` re-reads the file when it has changed (checked at most every
    ``reload_interval`` seconds); a file made unreadable or invalid meanwhile keeps the keys
    read before, and :attr:`error` says why. Changes are read-modify-write under an exclusive
    ``flock`` on ``<path>.lock``, so processes sharing the file serialise them.
    """

    def __init__(self, path: Path, *, reload_interval: float = 1.0) -> None:
        self.path = path
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._read_at = time.monotonic()
        self.generation = 0
        self.error: str | None = None
        self._stamp = self._file_stamp()
        self._keys = load_keyring(path)  # a bad file stops the process at start-up

    def __repr__(self) -> str:
        return f"SigningKeyring({str(self.path)!r}, {len(self._keys)} key(s))"

    def current(self) -> tuple[SigningKey, ...]:
        now = time.monotonic()
        if now - self._checked_at >= self._reload_interval:
            self._checked_at = now
            self._reload_if_changed()
        return self._keys

    def add(self, key: SigningKey) -> SigningKey:
        """:raises KeyringError: the key is unusable or its id is taken."""
        check_key(key)
        with self._changing() as keys:
            if any(known.id == key.id for known in keys):
                raise KeyringError(f"a key with id {key.id!r} exists already")
            keys.append(key)
        return key

    def update(
        self, key_id: str, *, not_before: datetime | None, expires_at: datetime | None
    ) -> SigningKey | None:
        """Give a key new dates; ``None`` when the keyring has no such key."""
        with self._changing() as keys:
            for index, known in enumerate(keys):
                if known.id == key_id:
                    changed = replace(known, not_before=not_before, expires_at=expires_at)
                    check_key(changed)
                    keys[index] = changed
                    return changed
        return None

    def remove(self, key_id: str) -> SigningKey | None:
        """Retire a key now; the removed key, or ``None`` when there is no such key."""
        with self._changing() as keys:
            for index, known in enumerate(keys):
                if known.id == key_id:
                    return keys.pop(index)
        return None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[SigningKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock, open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                try:
                    # Read afresh: another process may have changed it.
                    keys = list(load_keyring(self.path))
                except KeyringError as exc:
                    raise KeyringUnusable(str(exc)) from None
                before = list(keys)
                yield keys
                if keys != before:
                    _write_atomically(self.path, _encode(keys))
                self._loaded(tuple(keys), self._file_stamp())
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        # The stamp can miss a change (a rename that reuses the inode, within one tick of the
        # file system's clock, to a file of the same size), so the file is read anyway now
        # and then.
        stale = time.monotonic() - self._read_at >= _REREAD_SECONDS
        if stamp == self._stamp and not stale:
            return
        with self._lock:
            try:
                keys = load_keyring(self.path)
            except KeyringError as exc:
                self._stamp = stamp  # reported once per change, not on every delivery
                self._read_at = time.monotonic()
                self.error = str(exc)
                return
            self._loaded(keys, stamp)

    def _loaded(self, keys: tuple[SigningKey, ...], stamp: tuple[int, int, int] | None) -> None:
        if keys != self._keys:
            self.generation += 1
        self._keys, self._stamp, self.error = keys, stamp, None
        self._read_at = time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size


def settings_keys(secrets_by_source: Iterable[tuple[str, Iterable[str]]]) -> list[SigningKey]:
    """The undated keys of ``TIMEFUSE_WEBHOOK_SECRETS``, with ids stable across restarts."""
    keys = []
    for source, listed in secrets_by_source:
        for index, secret in enumerate(listed):
            keys.append(
                SigningKey(f"settings:{source}:{index}", source, secret, origin=SETTINGS_ORIGIN)
            )
    return keys
