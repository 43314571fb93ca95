"""The Go programs ``timefuse bench river`` measures timefuse against, built on first use.

Their sources ship with timefuse under ``timefuse/bench/peers`` (a Go module pinned to River
v0.51.2 by its go.sum): ``receiver`` (the webhook receiver both systems post to), ``rawpost``
(the physical ceiling: goroutines POSTing in a loop) and ``riverbench`` (River draining jobs
that POST). ``go build`` fetches the modules through the user's ``GOPROXY`` (the Go module
proxy by default) and the binaries are kept in ``~/.cache/timefuse/bench-peers/<hash>``, keyed
by the sources and the Go version, so a rebuild happens only when either changes.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from timefuse.bench.processes import BenchError

SOURCES = Path(__file__).resolve().parent / "peers"
PROGRAMS = ("receiver", "rawpost", "riverbench")
BUILD_TIMEOUT_S = 900.0


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "timefuse" / "bench-peers"


def _source_files() -> list[Path]:
    files = [SOURCES / "go.mod", SOURCES / "go.sum"]
    files += sorted(SOURCES.glob("*/*.go"))
    return files


def _go_version(go: str) -> str:
    result = subprocess.run(
        [go, "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"`go version` failed: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Peers:
    bindir: Path
    go_version: str

    def path(self, program: str) -> str:
        return str(self.bindir / program)


def build(go: str) -> Peers:
    """The built programs, building them first when the cache has none for these sources."""
    version = _go_version(go)
    digest = hashlib.sha256(version.encode())
    for path in _source_files():
        digest.update(path.relative_to(SOURCES).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    root = cache_root()
    target = root / digest.hexdigest()[:16]
    peers = Peers(target / "bin", version)
    if _complete(peers):
        return peers
    root.mkdir(parents=True, exist_ok=True)
    # Two benches (or test workers) starting at once build once.
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(peers):
            _build_into(go, target)
    return peers


def _complete(peers: Peers) -> bool:
    return all(os.access(peers.path(p), os.X_OK) for p in PROGRAMS)


def _build_into(go: str, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        source = work / "src"
        source.mkdir()
        for path in _source_files():
            destination = source / path.relative_to(SOURCES)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
        env = dict(os.environ)
        # go.sum pins every module: the build may download them but never change the pins.
        env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly").strip()
        result = subprocess.run(
            [go, "build", "-trimpath", "-o", str(work / "bin") + "/", "./..."],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(
                "building the Go peers failed (they need the Go module proxy, or GOPROXY, on "
                f"the first run):\n{result.stderr.strip()[-3000:]}"
            )
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        (work / "bin").rename(target / "bin")
        shutil.copytree(source, target / "src")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class ReceiverStats:
    connections: int  # client connections that carried deliveries
    requests: int
    distinct: int
    duplicates: int
    without_id: int
    first_unix: float | None
    last_unix: float | None


class GoReceiver:
    """The ``receiver`` program as a child process, driven over its HTTP control endpoints."""

    def __init__(self, program: str, host: str = "127.0.0.1") -> None:
        self._program = program
        self.host = host
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            self._program,
            "-host",
            self.host,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30.0)
        try:
            self.port = int(line)
        except ValueError:
            raise BenchError(f"the Go receiver did not start: {line!r}") from None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def reset(self) -> None:
        async with self._http().post(self.url("/reset")) as response:
            response.raise_for_status()

    async def stats(self) -> ReceiverStats:
        async with self._http().get(self.url("/stats")) as response:
            response.raise_for_status()
            data = await response.json()
        return ReceiverStats(**data)

    async def ids(self) -> set[str]:
        async with self._http().get(self.url("/ids")) as response:
            response.raise_for_status()
            text = await response.text()
        return set(text.split("\n")) - {""}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the receiver exits when its stdin closes
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BenchError("the Go receiver is not running")
        return self._session


async def run_json(
    args: list[str],
    *,
    on_line: Callable[[str], Awaitable[None]] | None = None,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Run a peer; its last stdout line is its JSON report. Earlier lines go to ``on_line``."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    last = ""

    async def read_lines() -> None:
        nonlocal last
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode().strip():
            if on_line is not None and not line.startswith("{"):
                await on_line(line)
            last = line

    try:
        await asyncio.wait_for(read_lines(), timeout)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    stderr = (await stderr_task).decode(errors="replace")
    name = Path(args[0]).name
    try:
        report: dict[str, Any] = json.loads(last)
    except ValueError:
        raise BenchError(f"{name} exited with {code}: {stderr.strip()[-2000:]}") from None
    if code != 0:
        raise BenchError(f"{name} failed: {report.get('error')}\n{stderr.strip()[-2000:]}")
    return report
