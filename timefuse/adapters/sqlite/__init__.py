"""The embedded event store on SQLite: the default when no database is configured."""

from __future__ import annotations

from timefuse.adapters.sqlite.dispatch_lock import (
    DispatchLockError,
    DispatchLockHeld,
    dispatch_lock,
)
from timefuse.adapters.sqlite.store import SqliteEventStore
from timefuse.ports.clock import Clock

__all__ = [
    "DispatchLockError",
    "DispatchLockHeld",
    "SqliteEventStore",
    "dispatch_lock",
    "from_url",
    "path_from_url",
]

_SCHEME = "sqlite:"
_PREFIX = "sqlite:///"
_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"


def path_from_url(url: str) -> str:
    """The file a ``sqlite:///...`` URL names, in SQLAlchemy's convention.

    Three slashes then a relative path (``sqlite:///timefuse.db`` is ``timefuse.db``); a
    fourth slash starts an absolute one (``sqlite:////var/lib/timefuse.db``).
    """
    if not url.startswith(_SCHEME):
        raise ValueError(f"not a SQLite URL: {url!r}; expected {_FORMS}")
    if not url.startswith(_PREFIX):
        raise ValueError(
            f"a SQLite URL takes no host and needs three slashes: {url!r}; expected {_FORMS}"
        )
    path = url[len(_PREFIX) :]
    if not path or path == "/":
        raise ValueError(f"the SQLite URL {url!r} names no file; expected {_FORMS}")
    if "?" in path or "#" in path:
        # Rather than silently becoming part of a file name ("timefuse.db?mode=ro").
        raise ValueError(f"the SQLite URL {url!r} has a query or fragment, which is not supported")
    return path


def from_url(url: str, *, clock: Clock | None = None) -> SqliteEventStore:
    """A store (not yet opened) on the file ``url`` names; see :func:`path_from_url`."""
    return SqliteEventStore(path_from_url(url), clock=clock)
