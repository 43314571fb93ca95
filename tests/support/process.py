"""Runs ``timefuse`` as a user would: a child process on a free port, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TimefuseProcess:
    """One ``timefuse`` process; ``start`` again after ``stop``/``kill`` reuses its database."""

    def __init__(
        self, workdir: Path, env: Mapping[str, str], command: str = "serve", port: int = 0
    ) -> None:
        self.workdir = workdir
        self.command = command
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'timefuse.db'}",
            # Test receivers live on loopback, which HTTP delivery refuses by default.
            "TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TIMEFUSE_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        # More arguments of the command (``--insecure-no-auth``...).
        self.extra_args: tuple[str, ...] = ()
        self.log_path = workdir / f"timefuse-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "timefuse", self.command]
        if self.command in ("serve", "api"):
            args += ["--port", str(self.port)]
        args += self.extra_args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        if self.command in ("serve", "api"):
            self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"timefuse exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timefuse did not become ready:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""
