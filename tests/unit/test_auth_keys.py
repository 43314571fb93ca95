"""The keys file, key look-up, the `timefuse keys` command and the bind-safety rule."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from timefuse.config import ApiSettings, ConfigError
from timefuse.entrypoints.auth import (
    ApiKey,
    KeyRing,
    Role,
    hash_key,
    is_loopback,
    load_key_ring,
    load_keys,
)
from timefuse.entrypoints.cli import main
from timefuse.entrypoints.runner import StartupError, check_exposure

DIGEST = hash_key("tfk_example")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def entry(**fields: str) -> str:
    values = {
        "name": '"billing"',
        "sha256": f'"{DIGEST}"',
        "sources": '["billing"]',
        "roles": '["submit", "read"]',
    }
    values.update(fields)
    return "[[keys]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


class TestKeysFile:
    def test_a_toml_entry_becomes_a_key(self, tmp_path: Path) -> None:
        ring = load_keys(write(tmp_path / "keys.toml", entry()))

        roles = frozenset({Role.SUBMIT, Role.READ})
        assert ring.find("tfk_example") == ApiKey("billing", DIGEST, frozenset({"billing"}), roles)

    def test_a_metrics_key_may_be_scoped_to_sources(self, tmp_path: Path) -> None:
        ring = load_keys(write(tmp_path / "keys.toml", entry(roles='["metrics"]')))

        key = ring.find("tfk_example")
        assert key is not None
        assert (key.sources, key.roles) == (frozenset({"billing"}), frozenset({Role.METRICS}))

    def test_the_same_entries_in_json(self, tmp_path: Path) -> None:
        document = {
            "keys": [{"name": "ops", "sha256": DIGEST.upper(), "sources": "*", "roles": ["admin"]}]
        }
        ring = load_keys(write(tmp_path / "keys.json", json.dumps(document)))

        key = ring.find("tfk_example")
        assert key is not None
        assert (key.sources, key.roles) == (None, frozenset({Role.ADMIN}))

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [
            (entry(roles='["submit", "write"]'), "unknown role 'write'"),
            (entry(roles="[]"), "at least one role"),
            (entry(sha256='"abc"'), "64 hex digits"),
            (entry(sha256=f'"{"g" * 64}"'), "64 hex digits"),
            (entry(sources="[]"), "non-blank sources"),
            (entry(sources='["*", "billing"]'), "not both"),
            (entry(sources='["billing"]', roles='["admin"]'), "every source"),
            (entry(name='" "'), "needs a name"),
            (entry() + 'role = "admin"\n', "unknown field"),
            (entry(roles=""), "missing required field"),
            (entry() + entry(sha256=f'"{hash_key("other")}"'), "two keys are named"),
            (entry() + entry(name='"other"'), "same hash"),
            ("keys = []\n", "holds no keys"),
            ("[[keys]\n", "TOML"),
        ],
    )
    def test_a_bad_file_is_refused_naming_the_problem(
        self, tmp_path: Path, text: str, complaint: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_keys(write(tmp_path / "keys.toml", text))

        assert "TIMEFUSE_API_KEYS_FILE" in str(caught.value)
        assert complaint.lower() in str(caught.value).lower()

    def test_a_missing_file_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="can't read"):
            load_keys(tmp_path / "absent.toml")

    def test_no_file_means_no_authentication(self) -> None:
        assert load_key_ring(ApiSettings.from_env({})) is None

    def test_metrics_auth_on_by_default_needs_no_keys(self) -> None:
        # It applies once keys exist; without them the API trusts every caller anyway.
        assert ApiSettings.from_env({}).metrics_auth is True
        assert load_key_ring(ApiSettings.from_env({"TIMEFUSE_METRICS_AUTH": "true"})) is None

    def test_the_ring_never_shows_hashes(self, tmp_path: Path) -> None:
        ring = load_keys(write(tmp_path / "keys.toml", entry()))

        assert DIGEST not in repr(ring)


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_a_key_is_found_by_itself_and_by_nothing_else(key: str, other: str) -> None:
    ring = KeyRing([ApiKey("k", hash_key(key), None, frozenset({Role.READ}))])

    assert ring.find(key) is not None
    assert (ring.find(other) is not None) is (other == key)


def test_an_oversized_token_is_not_even_hashed() -> None:
    huge = "k" * 10_000
    ring = KeyRing([ApiKey("k", hash_key(huge), None, frozenset({Role.READ}))])

    assert ring.find(huge) is None


class TestKeysCommand:
    def test_a_new_key_and_its_entry_load_back(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["keys", "new", "--name", "billing", "--sources", "billing,invoices",
                     "--roles", "submit,read"])  # fmt: skip

        out = capsys.readouterr().out
        key = next(line for line in out.splitlines() if line.startswith("tfk_"))
        # The key comes first, then a blank line and the entry (the part for the file).
        ring = load_keys(write(tmp_path / "keys.toml", out.partition("\n\n")[2]))
        found = ring.find(key)
        assert code == 0
        assert found is not None
        assert found.sources == frozenset({"billing", "invoices"})
        assert found.roles == frozenset({Role.SUBMIT, Role.READ})
        assert hash_key(key) in out

    def test_two_new_keys_differ(self, capsys: pytest.CaptureFixture[str]) -> None:
        keys = set()
        for _ in range(2):
            main(["keys", "new", "--name", "x", "--sources", "*", "--roles", "admin"])
            out = capsys.readouterr().out
            keys.add(next(line for line in out.splitlines() if line.startswith("tfk_")))

        assert len(keys) == 2

    @pytest.mark.parametrize(
        "args",
        [
            ["--sources", "a", "--roles", "submit,write"],
            ["--sources", "a", "--roles", "admin"],
            ["--sources", ",", "--roles", "read"],
        ],
    )
    def test_bad_arguments_exit_2(
        self, args: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["keys", "new", "--name", "x", *args]) == 2
        assert "timefuse keys:" in capsys.readouterr().err

    def test_hash_reads_the_key_from_standard_input(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO("tfk_example\n"))

        assert main(["keys", "hash"]) == 0
        assert capsys.readouterr().out.strip() == DIGEST


class TestExposure:
    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.8.9.10", True),
            ("::1", True),
            ("[::1]", True),
            ("localhost", True),
            ("0.0.0.0", False),
            ("::", False),
            ("", False),
            ("10.0.0.5", False),
            ("example.internal", False),
        ],
    )
    def test_loopback_addresses(self, host: str, loopback: bool) -> None:
        assert is_loopback(host) is loopback

    def test_without_keys_a_public_address_is_refused(self) -> None:
        with pytest.raises(StartupError, match="--insecure-no-auth"):
            check_exposure(ApiSettings.from_env({}), "0.0.0.0", insecure_no_auth=False)

    def test_the_refusal_can_be_overridden_and_is_logged(self) -> None:
        with structlog.testing.capture_logs() as logs:
            check_exposure(ApiSettings.from_env({}), "0.0.0.0", insecure_no_auth=True)

        assert logs[0]["log_level"] == "warning"
        assert "anyone" in logs[0]["event"]

    def test_without_keys_loopback_is_served_and_says_so(self) -> None:
        with structlog.testing.capture_logs() as logs:
            check_exposure(ApiSettings.from_env({}), "127.0.0.1", insecure_no_auth=False)

        assert "loopback only" in logs[0]["event"]

    def test_with_keys_any_address_is_served(self, tmp_path: Path) -> None:
        settings = ApiSettings.from_env(
            {"TIMEFUSE_API_KEYS_FILE": str(write(tmp_path / "k.toml", entry()))}
        )

        with structlog.testing.capture_logs() as logs:
            check_exposure(settings, "0.0.0.0", insecure_no_auth=False)

        assert logs[0]["keys"] == 1
