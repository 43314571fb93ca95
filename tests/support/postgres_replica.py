"""A hot standby of a private test server, by streaming replication (``pg_basebackup -R``).

For the read-replica tests: the standby replays the primary's WAL as it is written, serves
read-only queries, and can be paused (``pg_wal_replay_pause()``) to stand for a lagging replica.
"""

from __future__ import annotations

import psycopg

from tests.support.postgres_server import LocalServer, make_root


class StandbyServer(LocalServer):
    """A streaming replica of ``primary``, with data in a temp dir of its own."""

    @classmethod
    def replicate(cls, primary: LocalServer) -> StandbyServer:
        run_as = primary._run_as
        server = cls(primary.bindir, make_root(run_as), run_as)
        try:
            server._run(
                "pg_basebackup",
                "--dbname", primary.admin_dsn,
                "--pgdata", str(server._data),
                "--write-recovery-conf",  # standby.signal and primary_conninfo
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            )  # fmt: skip
            server._sockets.mkdir()
            server._chown_to_service_user(server._sockets)
            server._start_on_a_free_port()
        except BaseException:
            server.close()
            raise
        return server

    def _server_options(self) -> str:
        # As a production standby should run: the primary keeps the row versions the standby's
        # queries still read, so replay doesn't cancel them ("conflict with recovery").
        return f"{super()._server_options()} -c hot_standby_feedback=on"

    def pause_replay(self) -> None:
        self._admin("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self._admin("SELECT pg_wal_replay_resume()")

    def _admin(self, statement: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(statement)
