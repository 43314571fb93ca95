"""Delivery plugins in a real process: the dispatcher over a SQLite store, and the CLI.

The ``timefuse-file`` example package must be installed (``make`` does it:
``pip install -e examples/timefuse-file``) for the tests that load it through its entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tests.support.process import TimefuseProcess
from timefuse import hookimpl
from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.factories import make_event

Register = Callable[[DeliveryType], None]
HANG_TIMEOUT_SECONDS = 0.2
SETTLED = frozenset(
    {EventStatus.COMPLETED, EventStatus.FAILED, EventStatus.DEAD_LETTER, EventStatus.CANCELLED}
)


class MisbehavingPlugin:
    """Delivery types that raise, hang, refuse or succeed, and an observer of every attempt."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int, OutcomeKind, str]] = []

    @staticmethod
    async def boom(event: Event, attempt: int) -> DeliveryOutcome:
        raise RuntimeError("plugin bug: kaboom")

    @staticmethod
    async def hang(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(3600)
        return DeliveryOutcome.success()

    @staticmethod
    async def refuse(event: Event, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome.permanent("receiver said no")

    @staticmethod
    async def ok(event: Event, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome.success()

    @hookimpl
    def register_delivery_types(self, register: Register) -> None:
        for name in ("boom", "refuse", "ok"):
            register(DeliveryType(name, lambda d: None, getattr(self, name)))
        register(DeliveryType("hang", lambda d: None, self.hang, timeout_seconds=0.2))

    @hookimpl
    def delivery_attempted(
        self, event: Event, attempt: int, outcome: DeliveryOutcome, worker: str
    ) -> None:
        self.attempts.append((event.delivery_type, attempt, outcome.kind, worker))


class RaisingObserver:
    @hookimpl
    def delivery_attempted(self, event: Event) -> None:
        raise RuntimeError("observer bug")


def process(tmp_path: Path, *plugins: object, **env: str) -> Timefuse:
    settings = Settings.from_env(
        {
            "TIMEFUSE_PLUGINS": "",
            "TIMEFUSE_WORKER_ID": "worker-1",
            "SCHEDULER_POLL_INTERVAL_MS": "50",
            "TIMEFUSE_RETRY_BASE_MS": "10",
            "TIMEFUSE_RETRY_CAP_MS": "20",
            "TIMEFUSE_SHUTDOWN_TIMEOUT_SECONDS": "1",
            **env,
        }
    )
    store = SqliteEventStore(str(tmp_path / "db"))
    return bootstrap(settings, store=store, extra_plugins=plugins)


@contextlib.asynccontextmanager
async def dispatching(tf: Timefuse) -> AsyncIterator[asyncio.Task[None]]:
    await tf.open()
    stop = asyncio.Event()
    task = asyncio.create_task(tf.dispatcher.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await tf.close()


async def submit(tf: Timefuse, delivery_type: str, **overrides: object) -> Event:
    fields: dict[str, object] = {"destination": "anywhere", **overrides}
    event = make_event(delivery_type=delivery_type, **fields)
    await tf.store.insert_many([event])
    tf.wakeup.notify(event.next_attempt_at)
    return event


async def settled(tf: Timefuse, event: Event, timeout: float = 10.0) -> Event:
    async with asyncio.timeout(timeout):
        while True:
            stored = await tf.store.get(event.id)
            assert stored is not None
            if stored.status in SETTLED:
                return stored
            await asyncio.sleep(0.02)


# -- isolation: a plugin's failure is an attempt's failure ------------------------------------


async def test_a_plugin_raising_is_a_retriable_attempt_and_the_dispatcher_goes_on(
    tmp_path: Path,
) -> None:
    plugin = MisbehavingPlugin()
    tf = process(tmp_path, plugin)
    async with dispatching(tf) as dispatcher:
        failing = await settled(tf, await submit(tf, "boom", max_retries=1))
        later = await settled(tf, await submit(tf, "ok"))
        assert not dispatcher.done()

    assert failing.status is EventStatus.DEAD_LETTER  # retried, then out of retries
    assert failing.attempts == 2
    assert failing.last_error == "RuntimeError: plugin bug: kaboom"
    assert later.status is EventStatus.COMPLETED
    assert [a[:3] for a in plugin.attempts] == [
        ("boom", 1, OutcomeKind.RETRIABLE),
        ("boom", 2, OutcomeKind.RETRIABLE),
        ("ok", 1, OutcomeKind.SUCCESS),
    ]


async def test_a_hanging_plugin_is_cut_off_by_its_timeout(tmp_path: Path) -> None:
    plugin = MisbehavingPlugin()
    tf = process(tmp_path, plugin)
    async with dispatching(tf) as dispatcher:
        hung = await settled(tf, await submit(tf, "hang", max_retries=0))
        later = await settled(tf, await submit(tf, "ok"))
        assert not dispatcher.done()

    assert hung.status is EventStatus.DEAD_LETTER
    assert hung.last_error == "delivery type 'hang' timed out after 0.2 s"
    assert later.status is EventStatus.COMPLETED
    assert plugin.attempts[0][:3] == ("hang", 1, OutcomeKind.RETRIABLE)


async def test_a_permanent_outcome_fails_the_event_without_a_retry(tmp_path: Path) -> None:
    plugin = MisbehavingPlugin()
    tf = process(tmp_path, plugin)
    async with dispatching(tf):
        refused = await settled(tf, await submit(tf, "refuse", max_retries=5))

    assert refused.status is EventStatus.FAILED
    assert refused.attempts == 1
    assert refused.last_error == "receiver said no"


async def test_delivery_attempted_sees_each_attempt_with_the_worker_id(tmp_path: Path) -> None:
    plugin = MisbehavingPlugin()
    tf = process(tmp_path, plugin)
    async with dispatching(tf):
        await settled(tf, await submit(tf, "ok"))
    assert plugin.attempts == [("ok", 1, OutcomeKind.SUCCESS, "worker-1")]


async def test_an_observer_raising_does_not_stop_delivery(tmp_path: Path) -> None:
    tf = process(tmp_path, MisbehavingPlugin(), RaisingObserver())
    async with dispatching(tf):
        delivered = await settled(tf, await submit(tf, "ok"))
    assert delivered.status is EventStatus.COMPLETED


# -- the installed example plugin --------------------------------------------------------------


async def test_the_installed_file_plugin_delivers_through_the_dispatcher(
    tmp_path: Path,
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    # The plugin declares TIMEFUSE_FILE_ROOT; timefuse reads it with its own settings.
    tf = process(tmp_path, TIMEFUSE_PLUGINS="file", TIMEFUSE_FILE_ROOT=str(root))
    file_type = tf.registry.get("file")
    assert file_type is not None
    assert file_type.origin == "timefuse-file (entry point file)"

    async with dispatching(tf):
        event = await submit(tf, "file", destination="orders/today.jsonl", payload=b'{"n": 1}')
        delivered = await settled(tf, event)

    assert delivered.status is EventStatus.COMPLETED
    lines = (root / "orders" / "today.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [event.id]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TIMEFUSE_PLUGINS"}
    return subprocess.run(
        [sys.executable, "-m", "timefuse", *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_plugins_command_lists_types_with_origin_and_version() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in result.stdout.splitlines()}
    version = importlib.metadata.version("timefuse-file")
    assert rows["file"] == [version, "timefuse-file (entry point file)"]
    assert rows["http"] == [importlib.metadata.version("timefuse"), "timefuse (built-in)"]


def test_the_plugins_command_honours_timefuse_plugins() -> None:
    result = run_cli("plugins", TIMEFUSE_PLUGINS="")
    assert result.returncode == 0, result.stderr
    assert "file" not in result.stdout.split()
    assert "http" in result.stdout.split()


def test_a_plugin_that_is_not_installed_is_a_clear_start_up_error() -> None:
    result = run_cli("plugins", TIMEFUSE_PLUGINS="no-such-plugin")
    assert result.returncode == 2
    assert "TIMEFUSE_PLUGINS names 'no-such-plugin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_an_installed_plugins_declared_settings_after_timefuses() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.index("Event store:") < text.index("http delivery, from timefuse (built-in):")
    section = text.split("file delivery, from timefuse-file (entry point file):")[1]
    assert "TIMEFUSE_FILE_ROOT" in section
    assert "default timefuse-files" in section


def test_help_leaves_out_plugins_timefuse_plugins_leaves_out() -> None:
    result = run_cli("serve", "--help", TIMEFUSE_PLUGINS="")
    assert result.returncode == 0, result.stderr
    assert "TIMEFUSE_HTTP_ALLOWED_NETWORKS" in result.stdout
    assert "TIMEFUSE_FILE_ROOT" not in result.stdout


def test_a_bad_value_of_a_plugins_setting_is_a_clear_start_up_error() -> None:
    result = run_cli("plugins", TIMEFUSE_PLUGINS="file", TIMEFUSE_HTTP_TIMEOUT_SECONDS="soon")
    assert result.returncode == 2
    assert "TIMEFUSE_HTTP_TIMEOUT_SECONDS must be a number, got 'soon'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_process_logs_its_delivery_types_at_start_up(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    process = TimefuseProcess(
        tmp_path, {"TIMEFUSE_PLUGINS": "file", "TIMEFUSE_FILE_ROOT": str(root)}
    )
    try:
        process.start()
        process.stop()
    finally:
        process.close()
    records = [json.loads(line) for line in process.log_path.read_text().splitlines()]
    [loaded] = [r for r in records if r.get("event") == "delivery types loaded"]
    assert set(loaded["types"]) == {"file", "http"}
    assert loaded["types"]["file"].startswith("timefuse-file (entry point file)")
