"""The ``file`` delivery type: each event appended as one JSON line to a file under a root.

A destination is a relative path ending in ``.jsonl`` (``orders/today.jsonl``), resolved under
the directory ``TIMEFUSE_FILE_ROOT`` names (default ``./timefuse-files``, which must exist:
it may be a mount point, and filling an unmounted one would hide an outage). The variable is
declared through the ``declare_settings`` hook (:class:`FileSettings`), so ``timefuse --help``
lists it and timefuse hands its value to ``register_delivery_types``. Directories
below the root are created as needed. Each line is::

    {"event_id":"...","source":"...","scheduled_at":"...","attempt":1,"payload":<payload>}

Appends are fsync'd before an attempt counts as delivered. Within a process one lock per file
orders them; ``flock`` keeps lines whole across processes too (several ``timefuse dispatch``
on one host), and when a late write of a timed-out attempt is still running in its thread.
POSIX only (``fcntl``, ``O_NOFOLLOW``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from timefuse import hookimpl
from timefuse.config import Section, setting
from timefuse.domain import DeliveryOutcome, Event
from timefuse.ports.delivery import DeliveryType

__all__ = [
    "FileDelivery",
    "FileSettings",
    "classify_os_error",
    "declare_settings",
    "json_line",
    "register_delivery_types",
    "validate_destination",
]

log = logging.getLogger("timefuse_file")

TYPE_NAME = "file"
SUFFIX = ".jsonl"
MAX_DESTINATION_LENGTH = 1024
MAX_NAME_BYTES = 255
# An fsync on a busy disk can take seconds; past this the attempt is retried.
TIMEOUT_SECONDS = 10.0

# Errors that retrying the same event cannot fix: the destination itself is wrong (a directory,
# a path through a file, a symbolic link) or timefuse may not write there.
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EINVAL,
    }
)
# Everything else (ENOSPC, EDQUOT, EIO, EROFS, EMFILE, a missing root...) may pass once an
# operator frees space or remounts: retried, with backoff, until the event's retries run out.

_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FileSettings(Section, prefix="TIMEFUSE_FILE_", title="file delivery"):
    """The plugin's settings: each field reads ``TIMEFUSE_FILE_<FIELD>``."""

    root: str = setting(
        "timefuse-files", "Directory every file destination is relative to (must exist)."
    )


class RootMissing(Exception):
    """The file root does not exist (yet): retriable."""


class OutsideRoot(Exception):
    """A symbolic link leads the destination out of the file root: permanent."""


def validate_destination(destination: str) -> str | None:
    """``None`` for a relative ``.jsonl`` path that stays under the root, else the reason."""
    if not destination:
        return "must not be empty; give a relative path like orders/today.jsonl"
    if len(destination) > MAX_DESTINATION_LENGTH:
        return f"must be at most {MAX_DESTINATION_LENGTH} characters"
    if _CONTROL.search(destination):
        return "must not contain control characters"
    if "\\" in destination:
        return "must separate directories with '/', not '\\'"
    if destination.startswith("/") or _DRIVE.match(destination):
        return "must be relative to the file root, not absolute"
    parts = destination.split("/")
    if ".." in parts:
        return "must not contain '..': it would leave the file root"
    # One spelling per file, so that one lock per destination is one lock per file.
    if any(part in ("", ".") for part in parts):
        return "must be a plain relative path like orders/today.jsonl (no empty or '.' parts)"
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    if not parts[-1].endswith(SUFFIX) or parts[-1] == SUFFIX:
        return f"must name a {SUFFIX} file, like orders/today.jsonl"
    return None


def json_line(event: Event, attempt: int) -> bytes:
    """The line appended for one attempt, ending in a newline, with the payload embedded as is."""
    head = json.dumps(
        {
            "event_id": event.id,
            "source": event.source,
            "scheduled_at": event.scheduled_at.isoformat(),
            "attempt": attempt,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    # The payload is the JSON the client sent, byte for byte, so numbers and strings keep
    # their exact spelling. JSON strings can't hold a raw CR or LF, so any there are
    # whitespace between tokens: blanking them keeps the document and keeps it on one line.
    payload = event.payload.strip().replace(b"\r", b" ").replace(b"\n", b" ")
    return b"".join((head[:-1], b',"payload":', payload, b"}\n"))


# What the operator should look at, where the system's message alone would puzzle.
_HINTS = {
    errno.EEXIST: "a part of the path is a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "the destination is a directory",
    errno.ELOOP: "the destination is a symbolic link",
}


def classify_os_error(exc: OSError, destination: str) -> DeliveryOutcome:
    """A failed append as an outcome: permanent for :data:`PERMANENT_ERRNOS`, else retriable."""
    code = errno.errorcode.get(exc.errno or 0, "no errno")
    hint = _HINTS.get(exc.errno or 0)
    reason = f"cannot append to {destination}: {exc.strerror or exc} ({code})"
    if hint:
        reason = f"{reason}: {hint}"
    if exc.errno in PERMANENT_ERRNOS:
        return DeliveryOutcome.permanent(reason)
    return DeliveryOutcome.retriable(reason)


@dataclass
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _FileLocks:
    """One asyncio lock per destination, dropped once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, _LockEntry] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


class FileDelivery:
    """Appends events to JSON-lines files under ``root``.

    :param root: the directory destinations are relative to; made absolute at once, so a
        later change of working directory doesn't move it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self._locks = _FileLocks()

    @property
    def locks_held(self) -> int:
        """Destinations with an append in progress or waiting."""
        return len(self._locks)

    async def start(self) -> None:
        # Nothing to open: a file is opened per append, so a rotated file is picked up at once.
        if not await asyncio.to_thread(os.path.isdir, self.root):
            log.warning("file root %s does not exist: deliveries retry until it does", self.root)

    async def stop(self) -> None:
        self._locks.clear()

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        destination = event.destination
        reason = validate_destination(destination)
        if reason is not None:
            return DeliveryOutcome.permanent(f"invalid destination {destination!r}: {reason}")
        line = json_line(event, attempt)
        try:
            async with self._locks.hold(destination):
                await asyncio.to_thread(append_line, self.root, destination, line)
        except RootMissing:
            return DeliveryOutcome.retriable(
                f"file root {self.root} does not exist (set TIMEFUSE_FILE_ROOT or create it)"
            )
        except OutsideRoot:
            return DeliveryOutcome.permanent(
                f"{destination} leads out of the file root through a symbolic link"
            )
        except OSError as exc:
            return classify_os_error(exc, destination)
        return DeliveryOutcome.success()


def append_line(root: str, destination: str, line: bytes) -> None:
    """Append ``line`` to ``root/destination`` and fsync it (blocking: run it in a thread)."""
    if not os.path.isdir(root):
        raise RootMissing(root)
    path = os.path.join(root, destination)
    directory = os.path.dirname(path)
    # Checked before creating anything, so a symbolic link can't make us create directories
    # elsewhere; O_NOFOLLOW covers the file itself.
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(directory)]) != real_root:
        raise OutsideRoot(destination)
    os.makedirs(directory, exist_ok=True)
    created = not os.path.lexists(path)
    fd = os.open(path, _APPEND_FLAGS, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close()
        _write_durably(fd, line)
    finally:
        os.close(fd)
    if created:
        _fsync_directory(directory)  # or a crash could lose the new file's name


def _write_durably(fd: int, line: bytes) -> None:
    size = os.fstat(fd).st_size
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        # Leave no half line behind: the retry appends the whole line after what was there.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def declare_settings() -> type[FileSettings]:
    return FileSettings


@hookimpl
def register_delivery_types(
    register: Callable[[DeliveryType], None], settings: FileSettings
) -> None:
    # timefuse reads the settings at start-up, not at import, and hands them over here.
    delivery = FileDelivery(settings.root)
    register(
        DeliveryType(
            name=TYPE_NAME,
            validate_destination=validate_destination,
            deliver=delivery.deliver,
            start=delivery.start,
            stop=delivery.stop,
            timeout_seconds=TIMEOUT_SECONDS,
        )
    )
