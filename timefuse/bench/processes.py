"""The processes a bench run starts: the receiver, and a ``timefuse serve`` when self-hosted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp


class BenchError(Exception):
    """The bench can't run or finish; the message says why, for the command line."""


class ReceiverChild:
    """A receiver module run as a child process, driven one command line at a time.

    The child prints its port first, then answers each command on its standard output; it exits
    when its standard input closes.
    """

    def __init__(self, module: str, host: str, *args: str, limit: int) -> None:
        self.host = host
        self.port = 0
        self._argv = ["-m", module, host, *args]
        self._limit = limit
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=self._limit,
        )
        line = await self._readline(timeout=30.0)
        try:
            self.port = int(line)
        except ValueError:
            raise BenchError(f"the receiver did not start: {line!r}") from None

    async def ask(self, command: str, timeout: float = 60.0) -> str:
        """The child's one-line answer to ``command``."""
        async with self._lock:
            self._send(command)
            return await self._readline(timeout)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def _send(self, command: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise BenchError("the receiver is not running")
        self._proc.stdin.write(command.encode() + b"\n")

    async def _readline(self, timeout: float = 60.0) -> str:
        if self._proc is None or self._proc.stdout is None:
            raise BenchError("the receiver is not running")
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line:
            raise BenchError("the receiver exited unexpectedly")
        return line.decode().strip()


class ReceiverProcess(ReceiverChild):
    """The parent's handle on :mod:`timefuse.bench.receiver`, run as a child process."""

    def __init__(self, host: str = "127.0.0.1", delay: float = 0.0) -> None:
        super().__init__("timefuse.bench.receiver", host, str(delay), limit=2**24)
        self.delay = delay

    async def count(self) -> int:
        """Requests answered so far (with or without a webhook-id)."""
        return int(await self.ask("count"))

    async def peak(self) -> int:
        """The most requests held at once since the last ``peak`` (with a delay only)."""
        return int(await self.ask("peak"))

    async def take(self) -> list[tuple[str, float]]:
        """``(webhook-id, arrival)`` of every request since the last ``take``."""
        async with self._lock:
            self._send("take")
            records: list[tuple[str, float]] = []
            while (line := await self._readline()) != "end":
                webhook_id, _, arrived = line.rpartition(" ")
                records.append((webhook_id, float(arrived)))
            return records


class DayReceiverProcess(ReceiverChild):
    """The parent's handle on :mod:`timefuse.bench.day_receiver`, run as a child process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__("timefuse.bench.day_receiver", host, limit=2**26)

    async def stats(self, phase: int) -> tuple[int, int]:
        """Distinct sequence numbers arrived in ``phase``, and the arrivals beyond the first."""
        answer = json.loads(await self.ask(f"stats {phase}"))
        return int(answer["distinct"]), int(answer["duplicates"])

    async def summary(self, phase: int) -> dict[str, object]:
        result: dict[str, object] = json.loads(await self.ask(f"summary {phase}", timeout=300.0))
        return result

    async def missing(self, phase: int, expected: int, limit: int) -> list[int]:
        found: list[int] = json.loads(await self.ask(f"missing {phase} {expected} {limit}"))
        return found

    async def unmatched(self) -> int:
        return int(await self.ask("unmatched"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_hosted_env(workdir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of the bench's own ``timefuse serve``.

    The configured database and Kafka are used as they are; with none, a SQLite file in the
    run's temporary directory (never the user's ``./timefuse.db``).
    """
    env = dict(os.environ)
    if not env.get("DATABASE_URL") and not env.get("DB_HOST"):
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'timefuse.db'}"
    # The built-in receiver listens on loopback, which http delivery's guard refuses by default.
    env.setdefault("TIMEFUSE_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    env.setdefault("TIMEFUSE_LOG_FORMAT", "json")
    env.update(extra)
    return env


class ServeProcess:
    """A ``timefuse serve`` child on a free port, its log in a temporary directory."""

    def __init__(
        self,
        extra_env: Mapping[str, str],
        profile_path: str | None = None,
        log_path: str | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="timefuse-bench-")
        self.workdir = Path(self._tmp.name)
        self.port = free_port()
        self.env = self_hosted_env(self.workdir, extra_env)
        self.log_path = Path(log_path) if log_path else self.workdir / "timefuse.log"
        self._profile_path = profile_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        profile = ["-m", "cProfile", "-o", self._profile_path] if self._profile_path else []
        args = [sys.executable, *profile, "-m", "timefuse", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise BenchError(f"timefuse serve exited at start:\n{self.log_tail()}")
                try:
                    async with session.get(f"{self.base_url}/health/live") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise BenchError(f"timefuse serve did not answer within {timeout:g} s:\n{self.log_tail()}")

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set (VmHWM), from /proc; ``None`` where there is none."""
        if self._proc is None:
            return None
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return None

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._tmp.cleanup()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"
