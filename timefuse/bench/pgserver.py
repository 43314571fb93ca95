"""PostgreSQL for ``timefuse bench river``: a private cluster, or a server the user names.

Each measurement gets a fresh database of its own on the server, dropped afterwards, so River's
and timefuse's tables never meet and one run's rows don't slow the next. The private cluster is
started from the PostgreSQL server binaries on this machine (Debian's ``postgresql`` package or
any ``initdb`` on PATH), on a free loopback port, in a temporary directory that is removed when
it stops; like the test suite's, it trades durability for speed (``fsync=off``).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from timefuse.bench.processes import BenchError, free_port
from timefuse.bench.procfs import children_of, cpu_seconds

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
}
# A production-like server for a sustained run, by durability: "full" is PostgreSQL's default
# (a commit returns once its WAL is on disk); "async" writes and flushes the same WAL but a
# commit returns before the flush (synchronous_commit=off: a crash of the server loses the last
# few hundred milliseconds of commits); "off" is the test suite's (no fsync at all). Each has
# more memory than the default, and checkpoints spaced by time rather than forced by WAL volume.
_SUSTAINED = {**SETTINGS, "shared_buffers": "512MB", "max_wal_size": "4GB"}
DURABILITY: dict[str, dict[str, str]] = {
    "full": {**_SUSTAINED, "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
    "async": {**_SUSTAINED, "fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"},
    "off": {**_SUSTAINED, "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
}
SUPERUSER = "postgres"
READY_SECONDS = 60.0
DROP_ATTEMPTS = 5


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin dir: ``initdb`` on PATH, else /usr/lib/postgresql."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def with_dbname(dsn: str, dbname: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(dbname, safe="")))


class Server:
    """A PostgreSQL server the bench makes databases on."""

    kind = "external"

    def __init__(self, dsn: str) -> None:
        if "://" not in dsn:
            raise BenchError("--database-url must be a postgresql:// URL")
        self.dsn = dsn
        self._made: list[str] = []

    def version(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def create_database(self, name: str) -> str:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BenchError(
                f"cannot create database {name!r} on the server of --database-url (the role "
                f"needs CREATEDB): {exc}"
            ) from None
        self._made.append(name)
        return with_dbname(self.dsn, name)

    def drop_database(self, name: str) -> None:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        # FORCE ends the sessions still on it, but waits only 5 s for them to go: on a busy
        # machine a peer's sessions may take longer, so it is tried again.
        for attempt in range(DROP_ATTEMPTS):
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(statement)
                break
            except psycopg.Error:
                if attempt + 1 < DROP_ATTEMPTS:
                    time.sleep(1.0)
        if name in self._made:
            self._made.remove(name)

    def cpu_seconds(self) -> float | None:
        """CPU the whole server has used so far; ``None`` when it is not on this machine."""
        return None

    def close(self) -> None:
        for name in list(self._made):
            self.drop_database(name)


class PrivateServer(Server):
    """A throwaway cluster in a temporary directory, run as ``postgres`` when we are root."""

    kind = "private"

    def __init__(self, bindir: Path) -> None:
        self._bindir = bindir
        self._run_as = _service_user() if os.geteuid() == 0 else None
        # The service user must be able to enter it; TMPDIR may sit under /root.
        parent = "/tmp" if self._run_as is not None else None
        self.root = Path(tempfile.mkdtemp(prefix="timefuse-bench-pg-", dir=parent))
        self._data = self.root / "data"
        self._log = self.root / "postgres.log"
        self._port = free_port()
        self._started = False
        self.settings: dict[str, str] = {}
        self._options = ""
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        super().__init__(f"postgresql://{SUPERUSER}@127.0.0.1:{self._port}/postgres")

    @classmethod
    def start(cls, settings: dict[str, str] | None = None) -> PrivateServer:
        bindir = find_bindir()
        if bindir is None:
            raise BenchError(
                "no PostgreSQL server binaries found (initdb, pg_ctl): install Debian's "
                "postgresql package, or pass --database-url"
            )
        server = cls(bindir)
        try:
            server._run("initdb", "-D", str(server._data), "-U", SUPERUSER, "--auth=trust",
                        "--encoding=UTF8", "--no-sync")  # fmt: skip
            flags = ["-p", str(server._port), "-k", str(server.root)]
            for key, value in (settings or SETTINGS).items():
                flags += ["-c", f"{key}={value}"]
            server._options = shlex.join(flags)
            server.resume()
            server.settings = dict(settings or SETTINGS)
            server._wait_ready()
        except BaseException:
            server.close()
            raise
        return server

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast|immediate``) until :meth:`resume`."""
        self._run("pg_ctl", "stop", "-D", str(self._data), "-w", "-m", mode)
        self._started = False

    def resume(self) -> None:
        """Start the server (again), with the options it was first started with."""
        self._run("pg_ctl", "start", "-D", str(self._data), "-w", "-l", str(self._log),
                  "-o", self._options)  # fmt: skip
        self._started = True

    def cpu_seconds(self) -> float | None:
        """The postmaster's CPU, its reaped children's, and that of every live backend."""
        pid = self._postmaster_pid()
        if pid is None:
            return None
        total = cpu_seconds(pid, with_children=True)
        return total + sum(cpu_seconds(child) for child in children_of(pid))

    def close(self) -> None:
        if self._started:
            self._started = False
            self._run("pg_ctl", "stop", "-D", str(self._data), "-m", "fast", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self._data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise BenchError(f"the private PostgreSQL did not start: {exc}") from None
                time.sleep(0.1)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        run_as = self._run_as
        result = subprocess.run(
            [str(self._bindir / program), *args],
            cwd=self.root,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            capture_output=True,
            text=True,
            timeout=READY_SECONDS + 30,
            check=False,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        if check and result.returncode != 0:
            raise BenchError(
                f"{program} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise BenchError(
            "PostgreSQL refuses to run as root and there is no `postgres` user; run the bench "
            "as another user or pass --database-url"
        ) from None
