"""The ``file`` delivery type: timefuse's delivery contract, then what is particular to files."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from timefuse_file import plugin
from timefuse_file.plugin import FileDelivery, FileSettings, classify_os_error, validate_destination

from timefuse.domain import DeliveryOutcome, OutcomeKind
from timefuse.ports.delivery import DeliveryType
from timefuse.testing.delivery_contract import (
    DeliveryTypeContract,
    ReadBack,
    collect_delivery_types,
    make_event,
)


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every line under ``root``, parsed: a torn or interleaved line fails here."""
    return [
        json.loads(line)
        for path in sorted(root.rglob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    return root


class TestFileType(DeliveryTypeContract):
    @pytest.fixture
    def env(self, root: Path) -> dict[str, str]:
        return {"TIMEFUSE_FILE_ROOT": str(root)}

    @pytest.fixture
    def delivery_type(self, env: dict[str, str]) -> DeliveryType:
        return collect_delivery_types(plugin, env)["file"]

    @pytest.fixture
    def valid_destination(self) -> str:
        return "orders/today.jsonl"

    @pytest.fixture
    def invalid_destinations(self) -> list[str]:
        return ["", "/tmp/x.jsonl", "../x.jsonl", "orders/../../x.jsonl", "orders/today.json"]

    @pytest.fixture
    def arrange_failure(self, root: Path) -> str:
        (root / "taken.jsonl").mkdir()
        return "taken.jsonl"

    @pytest.fixture
    def delivered_event_ids(self, root: Path) -> ReadBack:
        async def read() -> list[str]:
            return [record["event_id"] for record in read_records(root)]

        return read


@pytest.fixture
def delivery(root: Path) -> FileDelivery:
    return FileDelivery(root)


def test_the_root_is_a_declared_setting_with_a_default() -> None:
    [variable] = FileSettings.variables()
    assert (variable.env, variable.default) == ("TIMEFUSE_FILE_ROOT", "timefuse-files")
    assert FileSettings.from_env({"TIMEFUSE_FILE_ROOT": "/srv/out"}).root == "/srv/out"


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        ("", "empty"),
        ("/etc/cron.d/x.jsonl", "not absolute"),
        ("C:x.jsonl", "not absolute"),
        ("../outside.jsonl", "'..'"),
        ("orders/../today.jsonl", "'..'"),
        ("orders//today.jsonl", "plain relative path"),
        ("./today.jsonl", "plain relative path"),
        ("orders\\today.jsonl", "'/'"),
        ("orders/today\n.jsonl", "control characters"),
        ("orders/today.json", ".jsonl file"),
        ("orders/.jsonl", ".jsonl file"),
        ("orders/" + "x" * 300 + ".jsonl", "255 bytes"),
    ],
)
def test_refuses_a_destination_with_a_clear_reason(destination: str, reason: str) -> None:
    assert reason in (validate_destination(destination) or "accepted")


async def test_appends_one_json_line_with_the_payload_embedded_as_sent(
    delivery: FileDelivery, root: Path
) -> None:
    payload = '{\r\n  "price": 1.50,\n  "name": "café"\n}'.encode()
    event = make_event(delivery_type="file", destination="a/b.jsonl", payload=payload)

    assert (await delivery.deliver(event, 3)).succeeded

    raw = (root / "a" / "b.jsonl").read_bytes()
    assert raw.count(b"\n") == 1
    assert raw.endswith(b'"price": 1.50,   "name": "caf\xc3\xa9" }}\n')  # not re-encoded
    (record,) = read_records(root)
    assert record == {
        "event_id": event.id,
        "source": event.source,
        "scheduled_at": event.scheduled_at.isoformat(),
        "attempt": 3,
        "payload": {"price": 1.5, "name": "café"},
    }


async def test_a_missing_root_is_retriable_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    event = make_event(delivery_type="file", destination="x.jsonl")

    outcome = await FileDelivery(missing).deliver(event, 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert "does not exist" in (outcome.error or "")
    assert not missing.exists()


async def test_a_destination_that_is_a_directory_fails_permanently(
    delivery: FileDelivery, root: Path
) -> None:
    (root / "dir.jsonl").mkdir()
    outcome = await delivery.deliver(make_event(destination="dir.jsonl"), 1)
    assert outcome.kind is OutcomeKind.PERMANENT
    assert "EISDIR" in (outcome.error or "")


async def test_a_symbolic_link_out_of_the_root_fails_permanently(
    delivery: FileDelivery, root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "out").symlink_to(elsewhere)
    (root / "link.jsonl").symlink_to(elsewhere / "target.jsonl")

    for destination in ("out/x.jsonl", "out/deeper/x.jsonl", "link.jsonl"):
        outcome = await delivery.deliver(make_event(destination=destination), 1)
        assert outcome.kind is OutcomeKind.PERMANENT, (destination, outcome)
    assert list(elsewhere.iterdir()) == []


async def test_a_full_disk_is_retriable_and_leaves_no_partial_line(
    delivery: FileDelivery, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_event(destination="x.jsonl")
    assert (await delivery.deliver(first, 1)).succeeded

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    outcome = await delivery.deliver(make_event(destination="x.jsonl"), 1)

    assert outcome.kind is OutcomeKind.RETRIABLE
    assert "ENOSPC" in (outcome.error or "")
    assert [record["event_id"] for record in read_records(root)] == [first.id]


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, OutcomeKind.RETRIABLE),
        (errno.EDQUOT, OutcomeKind.RETRIABLE),
        (errno.EIO, OutcomeKind.RETRIABLE),
        (errno.EROFS, OutcomeKind.RETRIABLE),
        (errno.EACCES, OutcomeKind.PERMANENT),
        (errno.EPERM, OutcomeKind.PERMANENT),
        (errno.EISDIR, OutcomeKind.PERMANENT),
        (errno.ENOTDIR, OutcomeKind.PERMANENT),
    ],
)
def test_classifies_file_system_errors(code: int, kind: OutcomeKind) -> None:
    outcome = classify_os_error(OSError(code, os.strerror(code)), "x.jsonl")
    assert outcome.kind is kind
    assert errno.errorcode[code] in (outcome.error or "")


async def test_large_appends_from_two_processes_worth_of_writers_never_interleave(
    root: Path,
) -> None:
    # Two FileDelivery objects have separate asyncio locks, as two dispatcher processes
    # would: only flock keeps their lines apart.
    writers = [FileDelivery(root), FileDelivery(root)]
    big = json.dumps({"blob": "x" * 300_000}).encode()
    events = [make_event(destination="shared.jsonl", payload=big) for _ in range(8)]

    outcomes: list[DeliveryOutcome] = await asyncio.gather(
        *(writers[n % 2].deliver(event, 1) for n, event in enumerate(events))
    )

    assert all(outcome.succeeded for outcome in outcomes)
    assert sorted(r["event_id"] for r in read_records(root)) == sorted(e.id for e in events)
    assert all(writer.locks_held == 0 for writer in writers)
