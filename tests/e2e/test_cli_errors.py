"""The command line's answers to bad configuration and missing services: a line, not a trace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.process import free_port


def timefuse(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "timefuse", *args],
        env={**os.environ, "TIMEFUSE_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["migrate", "dispatch", "api"])
def test_an_unreachable_database_is_one_line_and_exit_1(command: str) -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nothing"
    args = [command, "--port", str(free_port())] if command == "api" else [command]
    result = timefuse(*args, DATABASE_URL=url)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "timefuse: cannot reach a service timefuse needs" in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCHEDULER_BATCH_SIZE": "lots"}, "SCHEDULER_BATCH_SIZE must be an integer"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must start with"),
        ({"TIMEFUSE_PARTITION_GRANULARITY": "year"}, "TIMEFUSE_PARTITION_GRANULARITY"),
        ({"TIMEFUSE_DESTINATION_LIMITS": "[1]"}, "TIMEFUSE_DESTINATION_LIMITS"),
        ({"TIMEFUSE_DESTINATION_LIMITS": '{"h:99999": {"rate": 1}}'}, "key 'h:99999'"),
        ({"TIMEFUSE_RETRY_BASE_MS": "5000", "TIMEFUSE_RETRY_CAP_MS": "1000"}, "RETRY_CAP_MS"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    result = timefuse("dispatch", **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "url", ["mysql://app:hunter2secret@db/app", "app:hunter2secret@db/app", "hunter2secret@db"]
)
def test_a_bad_database_url_is_named_without_its_password(url: str) -> None:
    result = timefuse("dispatch", DATABASE_URL=url)
    assert result.returncode == 2, result.stderr
    assert "DATABASE_URL must start with" in result.stderr
    assert "hunter2secret" not in result.stderr


@pytest.mark.parametrize(
    "setting", ["TIMEFUSE_KAFKA_PRODUCER_CONFIG", "TIMEFUSE_KAFKA_CLIENT_CONFIG"]
)
@pytest.mark.parametrize(
    "config",
    [
        '{"acks": "1"}',
        '{"request.required.acks": 0}',
        '{"enable.idempotence": false}',
        '{"message.timeout.ms": 600000}',
        '{"delivery.timeout.ms": 600000}',
    ],
)
def test_producer_settings_that_would_break_accepted_means_durable_are_refused(
    setting: str, config: str
) -> None:
    key = config.split('"')[1]
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", setting: config}
    result = timefuse("api", "--port", str(free_port()), **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert setting in result.stderr
    assert f"may not set {key}" in result.stderr


def test_a_port_in_use_is_reported() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = timefuse("serve", "--port", str(port), DATABASE_URL="sqlite:///:memory:")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
