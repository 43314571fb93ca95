"""What the README says of each store's topologies and outages, held by real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.postgres_server import PostgresServer
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

Start = Callable[..., TimefuseProcess]


def event(receiver: Receiver, name: str, due: datetime) -> dict[str, object]:
    return {
        "external_job_id": name,
        "source": "topology",
        "scheduled_at": due.isoformat(),
        "delivery_type": "http",
        "destination": receiver.url("/hook"),
        "payload": {"name": name},
    }


@pytest.mark.slow
async def test_a_dispatcher_is_woken_by_an_api_process_committing_to_the_same_sqlite_file(
    processes: Start, receiver: Receiver
) -> None:
    # A 30 s poll: only a wake-up from the other process's commit delivers within seconds.
    slow_poll = {"SCHEDULER_POLL_INTERVAL_MS": "30000"}
    processes(slow_poll, command="dispatch")
    api = processes(slow_poll, command="api")
    async with httpx.AsyncClient(timeout=10) as client:
        for name in ("first", "second"):
            # The second one finds the dispatcher asleep on its poll, nothing else due.
            due = datetime.now(UTC) + timedelta(seconds=1)
            response = await client.post(
                f"{api.base_url}/api/v1/events", json=event(receiver, name, due)
            )
            assert response.status_code == 202, response.text
            marker = name.encode()
            assert await receiver.wait_for(
                lambda m=marker: any(m in r.body for r in receiver.on("/hook")),
                timeout=15,
            ), f"{name} never arrived"
            arrival = next(r for r in receiver.on("/hook") if name.encode() in r.body)
            # A poll would have taken up to 30 s; a wake-up (every 25 ms) delivers it at its
            # time. 2 s of slack covers a busy machine; a dispatcher left to its poll is
            # seconds late.
            late = arrival.at - due.timestamp()
            assert late < 2, f"{name} arrived {late:.1f} s late"


@pytest.mark.slow
def test_a_second_dispatching_process_on_one_sqlite_file_is_refused(processes: Start) -> None:
    first = processes({}, command="serve")
    api = processes({}, command="api")  # an API process is welcome
    second = processes({}, command="dispatch")
    assert second.proc is not None
    assert second.proc.wait(30) != 0
    assert "another process dispatches from" in second.log()
    assert api.proc is not None
    assert api.proc.poll() is None
    # The lock goes with its process, however it ends: a dispatcher started again takes it.
    first.kill()
    second.start()
    lock = second.workdir / "timefuse.db.dispatch.lock"
    deadline = time.monotonic() + 30
    while lock.read_text().strip() != str(second.proc.pid):
        assert second.proc.poll() is None, second.log()
        assert time.monotonic() < deadline, "the second dispatcher never took the lock"
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.slow
async def test_during_a_database_outage_one_event_and_a_batch_answer_503_within_the_submit_timeout(
    processes: Start, postgres: PostgresServer, postgres_dsn: str, receiver: Receiver
) -> None:
    if not postgres.restartable:
        pytest.skip("the test PostgreSQL server can't be restarted")
    tf = processes({"DATABASE_URL": postgres_dsn, "TIMEFUSE_SUBMIT_TIMEOUT_SECONDS": "1"})
    due = datetime.now(UTC) + timedelta(hours=1)
    answers: dict[str, tuple[int, float]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        postgres.stop("fast")
        try:
            for kind, path, body in [
                ("one", "/api/v1/events", event(receiver, "one", due)),
                (
                    "batch",
                    "/api/v1/events/batch",
                    {"events": [event(receiver, f"b{n}", due) for n in range(3)]},
                ),
            ]:
                began = time.monotonic()
                response = await client.post(f"{tf.base_url}{path}", json=body)
                answers[kind] = (response.status_code, time.monotonic() - began)
        finally:
            postgres.start()
    for kind, (status, took) in answers.items():
        assert status == 503, f"{kind}: {status}"
        # The pool's own timeout is 10 s; the submit timeout (1 s) bounds both answers.
        assert took < 6, f"{kind} took {took:.1f} s"
