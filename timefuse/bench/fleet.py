"""The timefuse processes of ``timefuse bench river`` and ``day``: ``timefuse api`` plus N
``timefuse dispatch`` (and, with Kafka, N ``timefuse ingest``), or one ``timefuse serve``, on one
PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from timefuse.bench.processes import BenchError, free_port

# Variables that would point the processes elsewhere than the bench's database and receiver.
_DROPPED = ("DATABASE_URL", "DB_HOST", "KAFKA_BOOTSTRAP_SERVERS")
READY_SECONDS = 120.0


def fleet_env(database_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env["DATABASE_URL"] = database_url
    # The receiver listens on loopback, which http delivery's guard refuses by default.
    env.setdefault("TIMEFUSE_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    env.setdefault("TIMEFUSE_LOG_FORMAT", "json")
    # Third-party plugins play no part in the comparison.
    env.setdefault("TIMEFUSE_PLUGINS", "")
    env.update(extra)
    return env


class Fleet:
    """Started by :meth:`start`, stopped (SIGTERM, then SIGKILL) by :meth:`stop`."""

    def __init__(self, database_url: str, extra_env: Mapping[str, str], workdir: Path) -> None:
        self.env = fleet_env(database_url, extra_env)
        self.workdir = workdir
        self.port = free_port()
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        # The port each process listens on: the API's, or the metrics port of the others.
        self._ports: dict[int, int] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivering_pids(self) -> list[int]:
        """The processes that claim and deliver: the dispatchers, or the one serve."""
        return [p.pid for role, p, _ in self._procs if role in ("dispatch", "serve")]

    def pids(self, role: str) -> list[int]:
        return [p.pid for r, p, _ in self._procs if r == role]

    def processes(self) -> list[tuple[str, int]]:
        """``(role, pid)`` of every process, in the order they were started."""
        return [(role, proc.pid) for role, proc, _ in self._procs]

    def urls(self, role: str) -> list[str]:
        """The base URL of each process of ``role``: its API, or its metrics port."""
        return [
            f"http://127.0.0.1:{self._ports[p.pid]}"
            for r, p, _ in self._procs
            if r == role and p.pid in self._ports
        ]

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "timefuse", "migrate"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"timefuse migrate failed:\n{result.stderr.strip()[-2000:]}")

    async def start(self, dispatchers: int, *, serve: bool = False) -> None:
        """``timefuse serve`` alone, or ``timefuse api`` and ``dispatchers`` dispatchers."""
        if serve:
            self._spawn("serve", "--port", str(self.port), port=self.port)
        else:
            self._spawn("api", "--port", str(self.port), port=self.port)
            for _ in range(dispatchers):
                port = free_port()
                self._spawn("dispatch", port=port, env={"TIMEFUSE_METRICS_PORT": str(port)})
        await self._until_started()

    async def start_roles(self, *, api: int, ingest: int, dispatch: int) -> None:
        """``api`` API processes (each on a port of its own: the clients spread over them),
        ``ingest`` ingest consumers and ``dispatch`` dispatchers, each with a metrics port."""
        for index in range(api):
            port = self.port if index == 0 else free_port()
            self._spawn("api", "--port", str(port), port=port)
        for role, count in (("ingest", ingest), ("dispatch", dispatch)):
            for _ in range(count):
                port = free_port()
                self._spawn(role, port=port, env={"TIMEFUSE_METRICS_PORT": str(port)})
        await self._until_started()

    def _spawn(
        self, role: str, *args: str, port: int | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        log_path = self.workdir / f"{role}-{len(self._procs)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "timefuse", role, *args],
                env={**self.env, **(env or {})},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._procs.append((role, proc, log_path))
        if port is not None:
            self._ports[proc.pid] = port

    async def _until_started(self) -> None:
        """Every process has logged that it started, and the API answers."""
        deadline = time.monotonic() + READY_SECONDS
        pending = list(self._procs)
        while pending:
            for entry in list(pending):
                role, proc, log_path = entry
                if proc.poll() is not None:
                    raise BenchError(f"timefuse {role} exited with {proc.returncode}:\n"
                                     f"{_tail(log_path)}")  # fmt: skip
                if b'"started"' in log_path.read_bytes():
                    pending.remove(entry)
            if time.monotonic() > deadline:
                role, _, log_path = pending[0]
                raise BenchError(f"timefuse {role} did not start within {READY_SECONDS:g} s:\n"
                                 f"{_tail(log_path)}")  # fmt: skip
            await asyncio.sleep(0.1)
        urls = [f"http://127.0.0.1:{port}" for port in self._ports.values()] or [self.base_url]
        async with aiohttp.ClientSession() as session:
            for url in urls:
                while not await _live(session, url):
                    if time.monotonic() > deadline:
                        raise BenchError(f"timefuse at {url} did not answer /health/live")
                    await asyncio.sleep(0.1)

    def log_tails(self) -> str:
        return "\n".join(f"--- timefuse {r} ---\n{_tail(path)}" for r, _, path in self._procs)

    def stop(self, timeout: float = 30.0) -> None:
        for _, proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._procs.clear()
        self._ports.clear()


async def _live(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/health/live") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
