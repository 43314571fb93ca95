"""Keys and safe defaults as an operator meets them: real `timefuse` processes over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.process import TimefuseProcess, free_port
from timefuse.entrypoints.auth import hash_key

Start = Callable[..., TimefuseProcess]
KEY = "tfk_e2e_operator"


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(
        f'[[keys]]\nname = "operator"\nsha256 = "{hash_key(KEY)}"\nsources = ["e2e"]\n'
        'roles = ["submit", "read"]\n'
    )
    return path


def run_briefly(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "timefuse", *args],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_without_keys_a_public_address_is_refused(tmp_path: Path, command: str, host: str) -> None:
    result = run_briefly(tmp_path, [command, "--host", host, "--port", str(free_port())])

    assert result.returncode == 1
    assert f"refusing to listen on {host!r} without API keys" in result.stderr
    assert "--insecure-no-auth" in result.stderr
    assert "TIMEFUSE_API_KEYS_FILE" in result.stderr


def test_a_bad_keys_file_stops_the_process_before_it_listens(tmp_path: Path) -> None:
    bad = tmp_path / "keys.toml"
    bad.write_text('[[keys]]\nname = "x"\nsha256 = "nope"\nsources = "*"\nroles = ["read"]\n')

    result = run_briefly(
        tmp_path, ["serve", "--port", str(free_port())], {"TIMEFUSE_API_KEYS_FILE": str(bad)}
    )

    assert result.returncode == 2
    assert "sha256 must be 64 hex digits" in result.stderr


def test_insecure_no_auth_serves_a_public_address_with_a_warning(tmp_path: Path) -> None:
    port = free_port()
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"}
    log = tmp_path / "insecure.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "timefuse", "api", "--host", "0.0.0.0", "--port", str(port),
             "--insecure-no-auth"],
            env=environment, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert _answers(f"http://127.0.0.1:{port}/api/v1/events/statistics", proc)
    finally:
        proc.terminate()
        proc.wait(10)
    assert "--insecure-no-auth given" in log.read_text()


def _answers(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def test_without_keys_loopback_is_served_and_the_log_says_so(timefuse: Start) -> None:
    tf = timefuse()

    assert "loopback only" in tf.log()


async def test_with_keys_every_call_but_health_needs_one(
    timefuse: Start, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"TIMEFUSE_API_KEYS_FILE": str(keys_file(tmp_path))})
    base = f"{tf.base_url}/api/v1/events"
    key = {"authorization": f"Bearer {KEY}"}
    body = {
        "external_job_id": "e2e-auth",
        "source": "e2e",
        "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": {},
    }

    anonymous = await client.post(base, json=body)
    accepted = await client.post(base, json=body, headers=key)
    foreign = await client.post(base, json={**body, "source": "other"}, headers=key)
    cancel = await client.delete(f"{base}/external/e2e-auth", headers=key)
    health = await client.get(f"{tf.base_url}/health/ready")
    spec = await client.get(f"{tf.base_url}/openapi.json", headers=key)

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert accepted.status_code == 202
    assert foreign.status_code == 403
    assert cancel.status_code == 403  # the key has no cancel role
    assert health.status_code == 200
    assert spec.json()["paths"]["/api/v1/events"]["post"]["security"] == [{"bearerAuth": []}]
    assert '"API keys loaded"' in tf.log()
    assert KEY not in tf.log()
