"""Throwaway PostgreSQL servers for timefuse's tests.

``postgres_server()`` yields a running server, chosen in this order:

1. ``TIMEFUSE_TEST_DATABASE_URL`` is set: that external server. Databases made with
   ``create_database`` are dropped on close; ``stop``/``start`` raise.
2. A Docker engine answers: testcontainers' ``postgres:16``.
3. Otherwise a private cluster from Debian's binaries (installed on demand by
   ``scripts/ensure-postgres.sh``) in a temp dir, on a free port of 127.0.0.1.

``TIMEFUSE_TEST_POSTGRES=docker`` or ``=local`` skips the probing and forces 2 or 3,
e.g. when a Docker engine runs but cannot pull images.

In modes 2 and 3, ``dsn`` logs in as ``timefuse``, a role with CREATEDB but not
superuser, so tests meet the privileges a managed production database grants.

Run this file to self-check: ``python -m tests.support.postgres_server``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support.docker import docker_available

EXTERNAL_URL_ENV = "TIMEFUSE_TEST_DATABASE_URL"
MODE_ENV = "TIMEFUSE_TEST_POSTGRES"

ENSURE_POSTGRES = Path(__file__).resolve().parents[2] / "scripts" / "ensure-postgres.sh"

ROLE = "timefuse"
PASSWORD = "timefuse"
DATABASE = "timefuse"
ADMIN = "postgres"
ADMIN_DATABASE = "postgres"
DOCKER_IMAGE = "postgres:16"
# initdb refuses to run as root; Debian's package creates `postgres`, and this one
# is only made when that user is missing.
FALLBACK_SERVICE_USER = "timefuse-test"

# Test data is disposable, so durability is traded for speed: without fsync,
# commit- and CREATE DATABASE-heavy tests run several times faster.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}

READY_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 40


class PostgresServerError(RuntimeError):
    """The test server could not be set up, started or stopped."""


class PostgresServer:
    """A running server for tests; ``dsn`` connects to its default test database."""

    kind: str = "abstract"
    # Tests of crash/restart behaviour should skip when this is False.
    restartable: bool = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def create_database(self, name: str) -> str:
        """Create an empty database owned by the test role and return its DSN."""
        _check_database_name(name)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_dbname(self.dsn, name)

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (``fast``, or ``immediate``: a crash without a checkpoint); its
        data is kept for ``start``."""
        raise NotImplementedError

    def start(self) -> None:
        """Start a stopped server on the same port; returns once it takes connections."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server for good and remove what it left behind."""
        raise NotImplementedError


class ExternalServer(PostgresServer):
    """A server someone else runs, named by ``TIMEFUSE_TEST_DATABASE_URL``."""

    kind = "external"
    restartable = False

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self._created: list[str] = []
        wait_until_ready(dsn, timeout_s=10.0)

    def create_database(self, name: str) -> str:
        database_dsn = super().create_database(name)
        self._created.append(name)
        return database_dsn

    def stop(self, mode: str = "fast") -> None:
        raise self._not_ours()

    def start(self) -> None:
        raise self._not_ours()

    def close(self) -> None:
        # A shared server outlives the run, so what the tests made must not pile up.
        while self._created:
            name = self._created.pop()
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
            except psycopg.Error as exc:
                warnings.warn(f"could not drop test database {name!r}: {exc}", stacklevel=2)

    @staticmethod
    def _not_ours() -> PostgresServerError:
        return PostgresServerError(
            f"{EXTERNAL_URL_ENV} points at an external server, which the tests cannot "
            "stop or start; skip such tests when `server.restartable` is False"
        )


class ContainerServer(PostgresServer):
    """``postgres:16`` in Docker, through testcontainers."""

    kind = "docker"

    def __init__(self) -> None:
        postgres_container = _postgres_container_class()
        # A fixed host port: Docker hands out a new ephemeral one on every restart,
        # which would break DSNs that tests hold across stop()/start().
        port = free_port()
        try:
            self._container = (
                postgres_container(
                    DOCKER_IMAGE,
                    username=ADMIN,
                    password=PASSWORD,
                    dbname=ADMIN_DATABASE,
                    driver=None,
                )
                .with_bind_ports(5432, port)
                .with_command(["postgres", *_setting_flags(SERVER_SETTINGS)])
                .start()
            )
        except Exception as exc:
            raise PostgresServerError(
                f"could not start {DOCKER_IMAGE} through testcontainers ({exc}); "
                f"{MODE_ENV}=local runs a local server instead"
            ) from exc
        try:
            host = self._container.get_container_host_ip()
            create_test_role(postgres_url(ADMIN, PASSWORD, host, port, ADMIN_DATABASE))
        except BaseException:
            self._container.stop()
            raise
        super().__init__(postgres_url(ROLE, PASSWORD, host, port, DATABASE))

    def stop(self, mode: str = "fast") -> None:
        container = self._container.get_wrapped_container()
        if mode == "immediate":
            container.kill(signal="SIGQUIT")  # PostgreSQL's immediate shutdown
            return
        # The image's STOPSIGNAL is SIGINT, which is PostgreSQL's fast shutdown.
        container.stop(timeout=30)

    def start(self) -> None:
        self._container.get_wrapped_container().start()
        wait_until_ready(self.dsn)

    def close(self) -> None:
        self._container.stop()


class LocalServer(PostgresServer):
    """A private cluster run with Debian's binaries from a temp dir."""

    kind = "local"
    _START_ATTEMPTS = 3

    def __init__(self, bindir: Path, root: Path, run_as: pwd.struct_passwd | None) -> None:
        super().__init__("")
        self.bindir = bindir
        self.root = root
        self._run_as = run_as
        self._data = root / "data"
        self._sockets = root / "sockets"
        self._log = root / "postgres.log"
        self._port = 0
        self._running = False
        self._closed = False

    @classmethod
    def create(cls) -> LocalServer:
        bindir = ensure_postgres_bindir()
        run_as = service_user() if os.geteuid() == 0 else None
        server = cls(bindir, make_root(run_as), run_as)
        try:
            server._initdb()
            server._start_on_a_free_port()
            create_test_role(server._url(ADMIN, ADMIN_DATABASE))
        except BaseException:
            server.close()
            raise
        return server

    @property
    def admin_dsn(self) -> str:
        """The superuser's URL (replication, server functions)."""
        return self._url(ADMIN, ADMIN_DATABASE)

    def stop(self, mode: str = "fast") -> None:
        if not self._running:
            return
        self._pg_ctl("stop", "-m", mode)
        self._running = False

    def start(self) -> None:
        if self._running:
            return
        self._pg_ctl("start", "-l", str(self._log), "-o", self._server_options())
        self._running = True
        try:
            # As the superuser: the test role does not exist yet on the first start.
            wait_until_ready(self._url(ADMIN, ADMIN_DATABASE))
        except PostgresServerError as exc:
            raise PostgresServerError(f"{exc}\n{self._log_tail()}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        except PostgresServerError:
            # A server that ignores a fast shutdown must still not outlive the tests.
            self._pg_ctl("stop", "-m", "immediate", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _initdb(self) -> None:
        self._sockets.mkdir()
        self._chown_to_service_user(self._sockets)
        self._run(
            "initdb",
            "--pgdata", str(self._data),
            "--username", ADMIN,
            "--auth=trust",  # reachable only from this machine, by tests
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",  # the cluster dies with the test run anyway
        )  # fmt: skip

    def _start_on_a_free_port(self) -> None:
        # The port is only known free when picked, so another process may grab it
        # before the server binds it: retry with another.
        for attempt in range(1, self._START_ATTEMPTS + 1):
            self._port = free_port()
            self.dsn = self._url(ROLE, DATABASE)
            try:
                self.start()
                return
            except PostgresServerError:
                if attempt == self._START_ATTEMPTS or not self._port_was_taken():
                    raise

    def _port_was_taken(self) -> bool:
        return "could not bind" in self._log_tail()

    def _server_options(self) -> str:
        settings = {"listen_addresses": "127.0.0.1", **SERVER_SETTINGS}
        flags = ["-p", str(self._port), "-k", str(self._sockets), *_setting_flags(settings)]
        # pg_ctl hands -o to a shell.
        return shlex.join(flags)

    def _url(self, user: str, dbname: str) -> str:
        return postgres_url(user, PASSWORD, "127.0.0.1", self._port, dbname)

    def _pg_ctl(self, action: str, *args: str, check: bool = True) -> None:
        timeout = str(int(READY_TIMEOUT_S))
        self._run("pg_ctl", action, "-D", str(self._data), "-w", "-t", timeout, *args, check=check)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        """Run a server program, as the service user when we are root."""
        run_as = self._run_as
        proc = subprocess.run(
            [str(self.bindir / program), *args],
            cwd=self.root,  # the service user cannot enter root's working directory
            env=_server_environment(),
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT_S + 30,
            check=False,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,  # drop root's supplementary groups
        )
        if check and proc.returncode != 0:
            raise PostgresServerError(
                f"`{shlex.join([program, *args])}` failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n{self._log_tail()}"
            )

    def _chown_to_service_user(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _log_tail(self) -> str:
        try:
            lines = self._log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no server log at {self._log})"
        return f"--- last lines of {self._log} ---\n" + "\n".join(lines[-LOG_TAIL_LINES:])


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a running PostgreSQL server; it is closed when the block exits."""
    server = _open_server()
    try:
        yield server
    finally:
        server.close()


def _open_server() -> PostgresServer:
    external_url = os.environ.get(EXTERNAL_URL_ENV)
    if external_url:
        return ExternalServer(external_url)
    mode = os.environ.get(MODE_ENV, "auto")
    if mode not in ("auto", "docker", "local"):
        raise PostgresServerError(f"{MODE_ENV} must be auto, docker or local, not {mode!r}")
    if mode == "docker" or (mode == "auto" and docker_available()):
        return ContainerServer()
    return LocalServer.create()


def _postgres_container_class() -> type:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the `community` namespace
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer


@functools.cache
def ensure_postgres_bindir() -> Path:
    """Bin dir of Debian's PostgreSQL server, installing the package if missing."""
    # apt's progress goes to our stderr, so a first, slow install is visible.
    proc = subprocess.run(
        ["bash", str(ENSURE_POSTGRES)],
        stdout=subprocess.PIPE,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise PostgresServerError(
            f"{ENSURE_POSTGRES} failed (exit {proc.returncode}); see its messages on stderr"
        )
    return Path(lines[-1])


def service_user() -> pwd.struct_passwd:
    """The non-root account that runs the server when the tests run as root."""
    for name in ("postgres", FALLBACK_SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--shell", "/usr/sbin/nologin", FALLBACK_SERVICE_USER],
        check=True,
    )  # fmt: skip
    return pwd.getpwnam(FALLBACK_SERVICE_USER)


def make_root(run_as: pwd.struct_passwd | None) -> Path:
    """A fresh temp dir that the server's user owns."""
    # TMPDIR may sit under /root, which the service user cannot traverse; /tmp is
    # world-traversable everywhere.
    parent = "/tmp" if run_as is not None else None
    root = Path(tempfile.mkdtemp(prefix="timefuse-pg-", dir=parent))
    if run_as is not None:
        os.chown(root, run_as.pw_uid, run_as.pw_gid)
    return root


def create_test_role(admin_dsn: str) -> None:
    """Create the non-superuser test role and its default database."""
    wait_until_ready(admin_dsn)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)
            )
        )


def wait_until_ready(dsn: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if not _may_become_ready(exc) or time.monotonic() >= deadline:
                raise PostgresServerError(
                    f"PostgreSQL at {_redact(dsn)} did not accept connections "
                    f"within {timeout_s:.0f}s: {exc}"
                ) from exc
            time.sleep(0.1)


def _may_become_ready(error: psycopg.OperationalError) -> bool:
    # No SQLSTATE: nothing answered yet. 57P03: starting up or shutting down.
    # Anything else (unknown role, bad password, ...) will not change by waiting.
    return error.sqlstate in (None, "57P03")


def postgres_url(user: str, password: str, host: str, port: int, dbname: str) -> str:
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@{host}:{port}/{quote(dbname, safe='')}"
    )


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection string, pointed at another database."""
    if "://" in dsn:
        return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(dbname, safe="")))
    return make_conninfo(dsn, dbname=dbname)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_database_name(name: str) -> None:
    # PostgreSQL silently truncates longer names, and the DSN would then be wrong.
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"invalid database name {name!r}: need 1-63 bytes, no NUL")


def _setting_flags(settings: dict[str, str]) -> list[str]:
    return [flag for key, value in settings.items() for flag in ("-c", f"{key}={value}")]


def _server_environment() -> dict[str, str]:
    # Stray PG* variables (PGDATA, PGPORT, ...) of the caller would steer the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"  # messages that the log-tail checks can read
    return env


def _redact(dsn: str) -> str:
    if "://" not in dsn:
        return dsn
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _self_check() -> None:
    started = time.monotonic()
    with postgres_server() as server:
        print(f"{server.kind} server up in {time.monotonic() - started:.2f}s: {server.dsn}")
        if server.kind != "external":
            _expect_query(server.dsn, "SELECT current_user", ROLE)
        database_dsn = server.create_database(f"self_check_{os.getpid()}")
        with psycopg.connect(database_dsn) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        if server.restartable:
            _expect_query(server.dsn, "SHOW fsync", "off")
            _check_restart(server, database_dsn)
        root = getattr(server, "root", None)
    if isinstance(root, Path) and root.exists():
        raise AssertionError(f"close() left {root} behind")
    print(f"OK ({time.monotonic() - started:.2f}s in all)")


def _check_restart(server: PostgresServer, database_dsn: str) -> None:
    began = time.monotonic()
    server.stop()
    try:
        psycopg.connect(server.dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        pass
    else:
        raise AssertionError("server still accepts connections after stop()")
    server.start()
    print(f"stop + start took {time.monotonic() - began:.2f}s")
    _expect_query(database_dsn, "SELECT count(*) FROM kept", 1)


def _expect_query(dsn: str, query: str, expected: object) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    value = row[0] if row else None
    if value != expected:
        raise AssertionError(f"{query!r} gave {value!r}, expected {expected!r}")


if __name__ == "__main__":
    try:
        _self_check()
    except (PostgresServerError, AssertionError) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
