"""Runs one Markdown file's examples, in order, as a reader would (docs/testing.md).

One POSIX shell (``sh``: dash on Debian, which has no bash-isms) runs every runnable block of
the file in turn, so a variable set by one block is there for the next. A ``server`` block
(re)starts ``timefuse serve`` in the file's working directory; a ``background`` block runs
beside the others until the end. Addresses are adapted on the way (:class:`Addresses`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.support.doc_examples import (
    Addresses,
    Block,
    Expectation,
    HttpAnswer,
    ServerCommand,
    Step,
    last_json,
    lines_match,
    read_blocks,
    shape_problems,
    split_http_output,
    steps,
)
from tests.support.process import TimefuseProcess, free_port

_STEP = "@@doc-test step {n}@@"
_STATUS_MARK = "@@doc-test status "
VENV_BIN = Path(sys.executable).parent


@dataclass
class Services:
    """What the examples may need, started by the test: Kafka's address, a database."""

    kafka: str | None = None
    database_url: str | None = None
    # Topics and group of this file's own, so files never read each other's records.
    topic_prefix: str = "doc"


def _curl_shim(bin_dir: Path, status_file: Path) -> None:
    """A ``curl`` first in PATH that notes each answer's status for the expectations."""
    real = shutil.which("curl")
    assert real is not None, "the doc examples need curl"
    script = bin_dir / "curl"
    # -w comes first, so an example's own -w wins; %{stderr} sends it to the status file.
    script.write_text(
        "#!/bin/sh\n"
        f"exec {real} -w '%{{stderr}}{_STATUS_MARK}%{{http_code}}\\n' \"$@\" "
        f'2>>"{status_file}"\n'
    )
    script.chmod(0o755)


class Shell:
    """One ``sh`` process fed block after block; stdout read up to each step's marker."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.status_file = workdir / ".doc-test-status"
        self.status_file.touch()
        self.stderr_file = workdir / ".doc-test-stderr"
        self._stderr = open(self.stderr_file, "wb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            ["sh", "-e"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader.start()
        self._counter = 0

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, commands: str, timeout: float) -> tuple[str, list[int]]:
        """Run ``commands``; their output and the statuses curl got meanwhile."""
        self._counter += 1
        marker = _STEP.format(n=self._counter)
        statuses_before = self._statuses()
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{commands}\nprintf '\\n%s\\n' '{marker}'\n")
        self._proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"no end after {timeout:g} s; output so far:\n{''.join(out)[-2000:]}"
                    f"\nstderr:\n{self.stderr()}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"the shell ended (a command failed):\n{''.join(out)[-2000:]}"
                    f"\nstderr:\n{self.stderr()}"
                )
            if line.rstrip("\n") == marker:
                break
            out.append(line)
        text = "".join(out)
        # The marker's printf starts with a newline of its own.
        text = text[:-1] if text.endswith("\n") else text
        return text, self._statuses()[len(statuses_before) :]

    def _statuses(self) -> list[int]:
        text = self.status_file.read_text(errors="replace")
        return [
            int(line[len(_STATUS_MARK) :].strip()[:3])
            for line in text.splitlines()
            if line.startswith(_STATUS_MARK)
        ]

    def stderr(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)
        self._reader.join(10)
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            if stream is not None:
                stream.close()


@dataclass
class Session:
    """One file's examples: its working directory, shell, server and background processes."""

    workdir: Path
    services: Services
    addresses: Addresses = field(init=False)
    server: TimefuseProcess | None = None
    background: list[tuple[subprocess.Popen[bytes], BinaryIO]] = field(default_factory=list)
    shell: Shell = field(init=False)

    def __post_init__(self) -> None:
        ports = {8080: free_port()}
        if self.services.kafka is not None:
            ports[9092] = int(self.services.kafka.rsplit(":", 1)[1])
        self.addresses = Addresses(ports, self.services.database_url)
        bin_dir = self.workdir / ".doc-test-bin"
        bin_dir.mkdir()
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "TIMEFUSE_LOG_FORMAT": "json",
        }
        self.shell = Shell(self.workdir, env)
        _curl_shim(bin_dir, self.shell.status_file)

    def adapt(self, text: str) -> str:
        return self.addresses.adapt(text, free_port)

    def start_server(self, command: ServerCommand) -> None:
        if self.server is not None:
            self.server.stop()
        env = {name: self.adapt(value) for name, value in command.env.items()}
        # Only what the docs set: no allowed networks or fast timers slipped in.
        env.setdefault("DATABASE_URL", f"sqlite:///{self.workdir / 'timefuse.db'}")
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            prefix = self.services.topic_prefix
            env.setdefault("TIMEFUSE_KAFKA_INGEST_TOPIC", f"{prefix}.ingest")
            env.setdefault("TIMEFUSE_KAFKA_CONSUMER_GROUP", f"{prefix}-ingest")
        server = TimefuseProcess(self.workdir, env, port=self.addresses.ports[8080])
        server.env.pop("TIMEFUSE_HTTP_ALLOWED_NETWORKS", None)
        server.env.update(env)
        if command.args:
            server.extra_args = command.args
        server.start()
        self.server = server

    def start_background(self, block: Block) -> None:
        text = self.adapt(block.text)
        log = open(self.workdir / f"background-{block.line}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["sh", "-c", text],
            cwd=self.workdir,
            env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append((proc, log))
        for doc_port, port in list(self.addresses.ports.items()):
            if str(port) in text and doc_port != 8080:
                _wait_for_port(port, proc, block)

    def run_block(self, block: Block) -> None:
        note = block.annotation
        if note.server:
            self.start_server(ServerCommand.parse(block))
            return
        if note.background:
            self.start_background(block)
            return
        if self.server is None:
            self.start_server(ServerCommand())
        for step in steps(block):
            self._run_step(block, step)

    def _run_step(self, block: Block, step: Step) -> None:
        output, statuses = self.shell.run(self.adapt(step.commands), block.annotation.timeout)
        expect = step.expect
        if expect is None:
            return
        where = f"{block.where}, the step ending at block line {expect.line}"
        context = f"\n--- commands:\n{step.commands}\n--- output:\n{output[-3000:]}"
        if isinstance(expect.shape, HttpAnswer):
            check_http(expect.shape, output, where + context)
            return
        check_step(expect, output, statuses, where + context)

    def close(self) -> None:
        self.shell.close()
        for proc, log in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            log.close()
        if self.server is not None:
            self.server.close()

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""


def check_step(expect: Expectation, output: str, statuses: list[int], where: str) -> None:
    if expect.status is not None:
        assert statuses, f"{where}: no curl answer to compare with {expect.status}"
        assert statuses[-1] == expect.status, f"{where}: status {statuses[-1]}, not {expect.status}"
    if expect.has_shape:
        problems = shape_problems(expect.shape, last_json(output))
        assert not problems, f"{where}:\n" + "\n".join(problems)
    if expect.lines:
        lines = output.splitlines()
        assert lines_match(expect.lines, lines), f"{where}: expected lines {list(expect.lines)}"


def check_http(answer: HttpAnswer, output: str, where: str) -> None:
    status, headers, body = split_http_output(output)
    assert status == answer.status, f"{where}: status {status}, not {answer.status}"
    for name, pattern in answer.headers.items():
        assert name in headers, f"{where}: no {name} header"
        problems = shape_problems(pattern, headers[name])
        assert not problems, f"{where}: header {name}: {problems}"
    if answer.has_shape:
        problems = shape_problems(answer.shape, json.loads(body))
        assert not problems, f"{where}:\n" + "\n".join(problems)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], block: Block) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{block.where}: the background block ended")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{block.where}: nothing listens on its port {port}")


@contextmanager
def session(workdir: Path, services: Services) -> Iterator[Session]:
    opened = Session(workdir, services)
    try:
        yield opened
    finally:
        opened.close()


def run_file(path: Path, workdir: Path, services: Services) -> list[str]:
    """Run the file's runnable blocks in order; the blocks skipped, with their reasons."""
    skipped: list[str] = []
    with session(workdir, services) as running:
        for block in read_blocks(path):
            if not block.runnable:
                continue
            if block.annotation.skip is not None:
                skipped.append(f"{block.where}: {block.annotation.skip}")
                continue
            try:
                running.run_block(block)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- timefuse's log:\n{running.log()}") from None
    return skipped
