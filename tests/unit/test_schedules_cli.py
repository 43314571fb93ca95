"""``timefuse schedules apply`` and ``list`` against the real app (in-process) and files."""

from __future__ import annotations

import asyncio
import io
import textwrap
import threading
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import bootstrap
from timefuse.entrypoints.cli import build_parser, main
from timefuse.entrypoints.schedules_cli import Transport, run_schedules_command
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store

TOML = """\
[defaults]
source = "billing"
timezone = "Europe/Berlin"
[defaults.event]
delivery_type = "http"
destination = "https://billing.example/run"

[[schedules]]
key = "nightly-invoices"
cron = "0 2 * * *"
[schedules.event]
payload = { job = "invoices" }

[[schedules]]
key = "reminders"
every_seconds = 3600
start_at = 2031-01-01T00:00:00Z
missed_runs = "skip"
[schedules.event]
payload = { job = "reminders" }
max_retries = 1
"""


T = TypeVar("T")


class TestClient:
    """The app in-process on an event loop of its own thread, called synchronously as the
    command calls a server."""

    __test__ = False

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        settings = Settings.from_env({})
        self.store = Store(MemoryStore())
        tf = bootstrap(
            settings, store=self.store, buffer=InlineIngestBuffer(self.store), metrics=Metrics()
        )
        app = create_app(
            service=tf.service,
            metrics=tf.metrics,
            settings=settings.api,
            keys=None,
            schedules=tf.schedules,
        )
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://timefuse"
        )
        self._run(self.store.open())

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def request(self, method: str, path: str, json: object = None) -> httpx.Response:
        return self._run(self._http.request(method, path, json=json))

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str) -> httpx.Response:
        return self.request("POST", path)

    def close(self) -> None:
        self._run(self._http.aclose())
        self._run(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture
def client() -> Iterator[TestClient]:
    http = TestClient()
    yield http
    http.close()


def transport(http: TestClient) -> Transport:
    def call(method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, dict[str, Any]]:
        response = http.request(method, path, json=body)
        answer: dict[str, Any] = response.json()
        return response.status_code, answer

    return call


def run(http: TestClient, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["schedules", *argv])
    out = io.StringIO()
    code = run_schedules_command(args, transport(http), out)
    return code, out.getvalue()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def stored(http: TestClient) -> dict[str, dict[str, Any]]:
    schedules = http.get("/api/v1/schedules").json()["data"]["schedules"]
    return {f"{s['source']}/{s['key']}": s for s in schedules}


def test_applying_a_file_declares_its_schedules_and_again_changes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    path = write(tmp_path, "schedules.toml", TOML)
    code, out = run(client, "apply", str(path))
    assert code == 0, out
    assert "created   billing/nightly-invoices" in out
    assert out.strip().endswith("2 created, 0 updated, 0 unchanged, 0 deleted, 0 failed")
    found = stored(client)
    nightly, reminders = found["billing/nightly-invoices"], found["billing/reminders"]
    assert (nightly["cron"], nightly["timezone"]) == ("0 2 * * *", "Europe/Berlin")
    # Defaults merged into each event, field by field.
    assert nightly["event"] == {
        "delivery_type": "http",
        "destination": "https://billing.example/run",
        "payload": {"job": "invoices"},
    }
    assert reminders["event"]["max_retries"] == 1
    assert reminders["start_at"] == "2031-01-01T00:00:00Z"
    assert reminders["missed_runs"] == "skip"
    code, out = run(client, "apply", str(path))
    assert (code, out.strip().splitlines()[-1]) == (
        0,
        "0 created, 0 updated, 2 unchanged, 0 deleted, 0 failed",
    )


def test_prune_deletes_what_the_file_no_longer_lists_of_its_sources_only(
    client: TestClient, tmp_path: Path
) -> None:
    assert run(client, "apply", str(write(tmp_path, "all.toml", TOML)))[0] == 0
    other = write(
        tmp_path,
        "other.yaml",
        """\
        schedules:
          - key: elsewhere
            source: shipping
            cron: "@hourly"
            event: {delivery_type: http, destination: "https://ship.example/", payload: 1}
        """,
    )
    assert run(client, "apply", str(other))[0] == 0
    fewer = TOML[: TOML.index('[[schedules]]\nkey = "reminders"')]
    fewer = fewer.replace('cron = "0 2 * * *"', 'cron = "0 3 * * *"')
    code, out = run(client, "apply", "--prune", str(write(tmp_path, "fewer.toml", fewer)))
    assert code == 0, out
    assert "updated   billing/nightly-invoices" in out
    assert "deleted   billing/reminders" in out
    assert set(stored(client)) == {"billing/nightly-invoices", "shipping/elsewhere"}


def test_a_yaml_file_with_a_refused_schedule_fails_and_prunes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    assert run(client, "apply", str(write(tmp_path, "all.toml", TOML)))[0] == 0
    path = write(
        tmp_path,
        "bad.yml",
        """\
        defaults:
          source: billing
          event: {delivery_type: http, destination: "https://billing.example/", payload: {}}
        schedules:
          - key: broken
            cron: "61 * * * *"
            timezone: Mars/Olympus
          - key: fine
            every_seconds: 60
            end_at: 2031-01-01T00:00:00+02:00
        """,
    )
    code, out = run(client, "apply", "--prune", str(path))
    assert code == 1
    assert "FAILED    billing/broken (422): cron: " in out
    assert "timezone: unknown time zone" in out
    assert "created   billing/fine" in out
    assert "not pruning" in out
    assert stored(client)["billing/fine"]["end_at"] == "2030-12-31T22:00:00Z"
    assert "billing/reminders" in stored(client)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("dup.toml", TOML + '\n[[schedules]]\nkey = "reminders"\n', "declared twice"),
        ("bad.toml", "schedules = [", "Invalid value"),
        ("top.toml", "schedule = []\n", "unknown top-level entries: schedule"),
        ("list.yaml", "- key: x\n", "expected a table"),
        ("notes.txt", "", "must be .toml, .yaml or .yml"),
    ],
)
def test_a_file_that_is_not_a_schedules_file_is_refused_before_any_change(
    client: TestClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    reason: str,
) -> None:
    code, _ = run(client, "apply", str(write(tmp_path, name, text)))
    assert code == 2
    assert reason in capsys.readouterr().err
    assert stored(client) == {}


def test_list_prints_each_schedule_with_its_next_run(client: TestClient, tmp_path: Path) -> None:
    assert run(client, "apply", str(write(tmp_path, "all.toml", TOML)))[0] == 0
    client.post(f"/api/v1/schedules/{stored(client)['billing/reminders']['id']}/pause")
    code, out = run(client, "list")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split() == ["SOURCE", "KEY", "STATE", "RULE", "TIMEZONE", "NEXT", "RUN"]
    assert rows[0].split()[:5] == ["billing", "nightly-invoices", "ACTIVE", "0", "2"]
    assert rows[1].split() == [
        "billing",
        "reminders",
        "PAUSED",
        "every",
        "3600",
        "s",
        "Europe/Berlin",
        "2031-01-01T00:00:00Z",
    ]
    code, out = run(client, "list", "--state", "paused")
    assert len(out.strip().splitlines()) == 2


def test_an_unreachable_timefuse_is_a_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "all.toml", TOML)
    assert main(["schedules", "apply", str(path), "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach timefuse at http://127.0.0.1:9" in capsys.readouterr().err
