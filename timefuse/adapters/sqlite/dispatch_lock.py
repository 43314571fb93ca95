"""One dispatching process per SQLite file.

Caps, rates and breakers are kept per process on SQLite, so a second dispatcher on one file
would double them. The dispatching process holds an exclusive lock on ``<file>.dispatch.lock``
for its life (an advisory ``flock``: the operating system drops it when the process ends, even
on SIGKILL); a second one finds it held and refuses to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class DispatchLockError(Exception):
    """The dispatch lock of a SQLite file can't be held; the message says why."""


class DispatchLockHeld(DispatchLockError):
    """Another process dispatches from this SQLite file."""


@contextlib.contextmanager
def dispatch_lock(database_path: str) -> Iterator[str]:
    """Hold the dispatch lock of ``database_path`` (yields the lock file's path)."""
    path = f"{database_path}.dispatch.lock"
    try:
        # Beside the database, whose directory the store makes when it opens: made here
        # first, as the lock is taken before the store opens.
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DispatchLockError(
            f"can't create the dispatch lock {path} beside the SQLite database: {exc.strerror}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DispatchLockHeld(
                f"another process dispatches from {database_path} (it holds {path}): one "
                "dispatching process per SQLite file, since caps, rates and breakers are kept per "
                "process; stop it, run `timefuse api` here instead, or use PostgreSQL for several"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)
