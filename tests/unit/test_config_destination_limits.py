"""TIMEFUSE_DESTINATION_LIMITS keys read as destination keys; a backoff cap below its base."""

from __future__ import annotations

import json

import pytest

from timefuse.config import ConfigError, DispatchSettings
from timefuse.domain.destination import destination_limit_keys


def limits(overrides: dict[str, object]) -> dict[str, object]:
    settings = DispatchSettings.from_env({"TIMEFUSE_DESTINATION_LIMITS": json.dumps(overrides)})
    return dict(settings.destination_limits)


def override_for(destination: str, overrides: dict[str, object]) -> object:
    found = limits(overrides)
    return next((found[k] for k in destination_limit_keys("http", destination) if k in found), None)


def test_a_host_and_port_override_holds_for_urls_that_leave_the_default_port_out() -> None:
    overrides = {"hooks.example.com:443": {"rate": 5}}
    assert override_for("https://hooks.example.com/x", overrides) == {"rate": 5.0}
    assert override_for("https://HOOKS.example.com:0443/y", overrides) == {"rate": 5.0}
    assert override_for("http://hooks.example.com/x", overrides) is None  # port 80


def test_an_override_for_an_address_holds_for_its_other_spellings() -> None:
    overrides = {"127.0.0.2:80": {"rate": 1}}
    for destination in (
        "http://127.0.0.2/",
        "http://127.0.0.2:0080/",
        "http://[::ffff:7f00:2]/",
        "http://[0:0:0:0:0:ffff:7f00:2]:80/",
    ):
        assert override_for(destination, overrides) == {"rate": 1.0}, destination


def test_a_bare_host_covers_every_port_and_a_host_and_port_one_wins() -> None:
    overrides = {"Hooks.Example.com": {"rate": 1}, "hooks.example.com:8443": {"rate": 2}}
    assert override_for("https://hooks.example.com/", overrides) == {"rate": 1.0}
    assert override_for("http://hooks.example.com:9000/", overrides) == {"rate": 1.0}
    assert override_for("https://hooks.example.com:8443/", overrides) == {"rate": 2.0}


def test_keys_are_stored_in_their_canonical_form() -> None:
    assert set(limits({"https://Hooks.Example.com/any": {}, "Kafka:orders": {}})) == {
        "hooks.example.com:443",
        "kafka:orders",
    }


@pytest.mark.parametrize("key", ["hooks.example.com:99999", "exa mple.com", "ftp://x/", ""])
def test_a_key_that_names_no_destination_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError, match="TIMEFUSE_DESTINATION_LIMITS: key") as refused:
        limits({key: {"rate": 1}})
    assert repr(key) in str(refused.value)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (" ", "is empty"),
        ("ftp://x/", "is a URL but not an http:// or https:// one with a host"),
        ("[::1", "has an unclosed '[' or text after ']' that is not ':port'"),
        ("[::1]x", "has an unclosed '[' or text after ']' that is not ':port'"),
        ("orders:", "is neither host:port with a numeric port nor <delivery type>:<destination>"),
    ],
)
def test_the_operator_reads_why_a_key_is_refused_and_what_to_write(key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        limits({key: {"rate": 1}})
    assert str(refused.value) == (
        f"TIMEFUSE_DESTINATION_LIMITS: key {key!r} {reason}; write host:port, a host, "
        "an http(s) URL or <delivery type>:<destination>"
    )


def test_a_key_with_an_empty_port_is_refused_bracketed_or_not() -> None:
    # Only a URL's empty port means the scheme's default (https://hooks.example.com:/ is :443).
    refusals = {
        "[2001:db8::1]:": "has ':' after ']' but no port",
        "hooks.example.com:": "is neither host:port with a numeric port",
        "127.0.0.2:": "is neither host:port with a numeric port",
    }
    for key, reason in refusals.items():
        with pytest.raises(ConfigError) as refused:
            limits({key: {"rate": 1}})
        assert f"key {key!r} {reason}" in str(refused.value)


def test_two_keys_for_one_destination_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"both name hooks\.example\.com:443"):
        limits({"hooks.example.com:443": {"rate": 1}, "https://hooks.example.com/": {"rate": 2}})


def test_a_retry_cap_below_the_base_stops_the_start_up() -> None:
    with pytest.raises(ConfigError, match=r"TIMEFUSE_RETRY_CAP_MS .* TIMEFUSE_RETRY_BASE_MS"):
        DispatchSettings.from_env(
            {"TIMEFUSE_RETRY_BASE_MS": "5000", "TIMEFUSE_RETRY_CAP_MS": "4999"}
        )
    with pytest.raises(ConfigError, match="TIMEFUSE_RETRY_CAP_MS"):
        DispatchSettings.from_env({"TIMEFUSE_RETRY_CAP_MS": "999"})  # the default base is 1000


def test_a_retry_cap_equal_to_the_base_is_accepted() -> None:
    settings = DispatchSettings.from_env(
        {"TIMEFUSE_RETRY_BASE_MS": "500", "TIMEFUSE_RETRY_CAP_MS": "500"}
    )
    assert (settings.retry_base_ms, settings.retry_cap_ms) == (500, 500)


@pytest.mark.parametrize("field", ["rate", "concurrency", "burst", "queue"])
@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e999", "1" + "0" * 400, "315360001"])
def test_a_limit_that_is_not_a_finite_number_up_to_ten_years_is_refused_naming_the_variable(
    field: str, value: str
) -> None:
    # Infinity once stopped the dispatcher at its first claim, NaN left the receiver unlimited.
    with pytest.raises(ConfigError) as refused:
        DispatchSettings.from_env(
            {"TIMEFUSE_DESTINATION_LIMITS": f'{{"hooks.example.com": {{"{field}": {value}}}}}'}
        )
    assert str(refused.value).startswith("TIMEFUSE_DESTINATION_LIMITS")
    assert f"hooks.example.com.{field} must be a number from 0 to 315360000" in str(refused.value)
