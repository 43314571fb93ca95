"""API keys: the keys file, hashing, and looking a presented key up.

The keys file (``TIMEFUSE_API_KEYS_FILE``) holds one entry per key, in TOML (or JSON when the
file name ends in ``.json``)::

    [[keys]]
    name = "billing-service"
    sha256 = "<64 hex digits: SHA-256 of the key>"
    sources = ["billing", "invoices"]       # or "*" for every source
    roles = ["submit", "read", "cancel"]    # among submit, read, cancel, metrics, admin
    read_only = false                       # optional; true: sees, acts on nothing

Only hashes are stored, so a leaked file (or a backup, or a config repository) gives nobody a
key. ``timefuse keys new`` prints a fresh key and the entry to paste.

Why a plain SHA-256 and not a password hash (bcrypt, scrypt): keys are 256 random bits made by
``timefuse keys new``, not words people choose, so there is no dictionary to try and nothing a
slow hash would protect; a slow hash would instead make every request, valid or not, cost tens
of milliseconds of CPU, an easy denial of service.
"""

from __future__ import annotations

import argparse
import enum
import getpass
import hashlib
import hmac
import ipaddress
import json
import secrets
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from timefuse.config import ApiSettings, ConfigError

KEY_PREFIX = "tfk_"
# Longest Authorization value worth hashing: real keys are ~47 characters; anything much longer
# is not a key, and hashing it would be work an attacker chooses the size of.
MAX_KEY_LENGTH = 256
ALL_SOURCES = "*"


class Role(enum.Enum):
    SUBMIT = "submit"
    READ = "read"
    CANCEL = "cancel"
    # /metrics (with the per-destination series of the key's sources), and nothing else.
    METRICS = "metrics"
    # Every other role, every source, and the /api/v1/events/admin/* operations.
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key. ``sources`` is ``None`` when the key acts for every source.

    A ``read_only`` key sees what its roles and sources show and changes nothing: the API
    answers its every request but a read (GET, HEAD) with 403, and the console shows it no
    action. An auditor's or a dashboard's key is an admin key that is read-only.
    """

    name: str
    sha256: str
    sources: frozenset[str] | None
    roles: frozenset[Role]
    read_only: bool = False


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    # Unknown fields are refused: a misspelt "role" silently ignored would grant nothing, or
    # (for "source") everything the default allows.
    name: str
    sha256: str
    sources: list[str] | str
    roles: list[str]
    read_only: bool = False


class _KeysFile(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[_Entry]


class KeyRing:
    """The configured keys, looked up by the SHA-256 of a presented key.

    Looking the hash up in a dict is safe from timing attacks: how long the look-up takes
    depends on the hash of the attacker's own guess, which tells them nothing about any stored
    key (to use it they would need a SHA-256 preimage). The final comparison is still
    :func:`hmac.compare_digest`, so the code states the intent and a later change to the
    look-up can't quietly make it a byte-by-byte comparison.
    """

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_hash = {key.sha256: key for key in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def __repr__(self) -> str:
        return f"KeyRing({sorted(key.name for key in self._by_hash.values())})"

    def find(self, presented: str) -> ApiKey | None:
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hash_key(presented)
        key = self._by_hash.get(digest)
        if key is None or not hmac.compare_digest(key.sha256, digest):
            return None
        return key

    def by_hash(self, sha256: str) -> ApiKey | None:
        """The key whose SHA-256 is ``sha256`` (a console session names its key this way)."""
        key = self._by_hash.get(sha256)
        if key is None or not hmac.compare_digest(key.sha256, sha256):
            return None
        return key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry(
    name: str,
    sha256: str,
    sources: Iterable[str] | None,
    roles: Iterable[Role],
    *,
    read_only: bool = False,
) -> str:
    """The TOML entry for a key, ready to paste into the keys file."""
    listed = '"*"' if sources is None else json.dumps(sorted(sources))
    return (
        "[[keys]]\n"
        f"name = {json.dumps(name)}\n"
        f'sha256 = "{sha256}"\n'
        f"sources = {listed}\n"
        f"roles = {json.dumps([role.value for role in roles])}\n"
        + ("read_only = true\n" if read_only else "")
    )


def load_key_ring(settings: ApiSettings) -> KeyRing | None:
    """The keys of ``TIMEFUSE_API_KEYS_FILE``; ``None`` when it is unset (no authentication)."""
    if not settings.api_keys_file.strip():
        return None
    return load_keys(Path(settings.api_keys_file))


def load_keys(path: Path) -> KeyRing:
    where = f"TIMEFUSE_API_KEYS_FILE ({path})"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: can't read it: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
        parsed = msgspec.convert(data, _KeysFile)
    except (ValueError, msgspec.ValidationError) as exc:
        # ValueError covers JSON, TOML and UTF-8 errors; none of them quotes a whole line.
        raise ConfigError(f"{where}: {exc}") from None
    if not parsed.keys:
        raise ConfigError(f"{where}: holds no keys; unset the variable to run without keys")
    keys = [_check_entry(where, index, entry) for index, entry in enumerate(parsed.keys)]
    _check_unique(where, keys)
    return KeyRing(keys)


def _check_entry(where: str, index: int, entry: _Entry) -> ApiKey:
    at = f"{where}: key {index} ({entry.name!r})"
    if not entry.name.strip():
        raise ConfigError(f"{where}: key {index} needs a name")
    digest = entry.sha256.strip().lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ConfigError(f"{at}: sha256 must be 64 hex digits (see `timefuse keys hash`)")
    roles = frozenset(_role(at, name) for name in entry.roles)
    if not roles:
        raise ConfigError(f"{at}: needs at least one role among {_role_names()}")
    sources = _sources(at, entry.sources)
    if Role.ADMIN in roles and sources is not None:
        # Stated in the file rather than implied, so nobody reads ["billing"] as a limit.
        raise ConfigError(f'{at}: an admin key acts for every source; set sources = "*"')
    return ApiKey(entry.name, digest, sources, roles, entry.read_only)


def _role(at: str, name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        raise ConfigError(f"{at}: unknown role {name!r}; roles are {_role_names()}") from None


def _role_names() -> str:
    return ", ".join(role.value for role in Role)


def _sources(at: str, value: list[str] | str) -> frozenset[str] | None:
    listed = [value] if isinstance(value, str) else value
    if ALL_SOURCES in listed:
        if len(listed) > 1:
            raise ConfigError(f'{at}: sources is either "*" or a list of sources, not both')
        return None
    if not listed or any(not source.strip() for source in listed):
        raise ConfigError(f'{at}: sources must list non-blank sources, or be "*"')
    return frozenset(listed)


def _check_unique(where: str, keys: list[ApiKey]) -> None:
    names: set[str] = set()
    hashes: set[str] = set()
    for key in keys:
        if key.name in names:
            raise ConfigError(f"{where}: two keys are named {key.name!r}")
        if key.sha256 in hashes:
            raise ConfigError(f"{where}: key {key.name!r} has the same hash as another key")
        names.add(key.name)
        hashes.add(key.sha256)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only.

    Names other than ``localhost`` count as exposed: what they resolve to can change after
    start-up, and refusing is the safe side of that doubt.
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_roles(text: str) -> list[Role]:
    """Roles from a comma list (the ``keys new`` command line); ``ValueError`` if unknown."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [Role(name) for name in names]
    except ValueError:
        raise ValueError(f"--roles: roles are {_role_names()}, got {text!r}") from None


def parse_sources(text: str) -> frozenset[str] | None:
    sources = [part.strip() for part in text.split(",") if part.strip()]
    if not sources or (ALL_SOURCES in sources and len(sources) > 1):
        raise ValueError(f'--sources: give a comma list of sources, or "*"; got {text!r}')
    return None if sources == [ALL_SOURCES] else frozenset(sources)


# The ``timefuse keys`` command: making keys and their entries, never storing them.


def add_keys_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "make API keys: print a new key and its keys-file entry, or hash a key"
    keys = commands.add_parser("keys", help=text, description=text)
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="print a new random key and the entry to paste into TIMEFUSE_API_KEYS_FILE",
    )
    new.add_argument("--name", required=True, help="who uses the key (unique in the file)")
    new.add_argument(
        "--sources", required=True, help='comma list of sources it may act for, or "*"'
    )
    new.add_argument(
        "--roles", required=True, help="comma list among submit, read, cancel, metrics, admin"
    )
    new.add_argument(
        "--read-only",
        action="store_true",
        help="the key sees what its roles show but changes nothing (API reads only; the "
        "console shows it no action)",
    )
    actions.add_parser(
        "hash",
        help="read a key on standard input, print its SHA-256 (the sha256 of its entry)",
    )


def run_keys_command(args: argparse.Namespace) -> int:
    try:
        if args.keys_action == "new":
            sys.stdout.write(
                _new_key_text(args.name, args.sources, args.roles, read_only=args.read_only)
            )
        else:
            print(hash_key(_read_key()))
    except ValueError as exc:
        print(f"timefuse keys: {exc}", file=sys.stderr)
        return 2
    return 0


def _new_key_text(name: str, sources_text: str, roles_text: str, *, read_only: bool = False) -> str:
    if not name.strip():
        raise ValueError("--name must not be blank")
    roles = parse_roles(roles_text)
    if not roles:
        raise ValueError("--roles: give at least one role")
    sources = parse_sources(sources_text)
    if Role.ADMIN in roles and sources is not None:
        raise ValueError('an admin key acts for every source: use --sources "*"')
    key = new_key()
    return (
        f"# The key, shown once: give it to {name} (Authorization: Bearer <key>).\n"
        f"{key}\n\n"
        "# The entry for TIMEFUSE_API_KEYS_FILE (it holds only the hash):\n"
        + key_entry(name, hash_key(key), sources, roles, read_only=read_only)
    )


def _read_key() -> str:
    # From standard input, not an argument: arguments end up in shell history and `ps`.
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        raise ValueError("no key on standard input")
    return key
