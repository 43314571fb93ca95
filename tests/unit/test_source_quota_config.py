"""TIMEFUSE_SOURCE_QUOTAS: what it accepts, what it refuses at start-up, which entry holds."""

from __future__ import annotations

import pytest

from timefuse.config import ConfigError, Settings
from timefuse.domain.quota import QuotaTable, SourceQuota


def table(text: str) -> QuotaTable:
    return Settings.from_env({"TIMEFUSE_SOURCE_QUOTAS": text}).tenants.source_quotas


def test_unset_means_every_source_is_unlimited() -> None:
    quotas = Settings.from_env({}).tenants.source_quotas

    assert not quotas
    assert quotas.entry_of("billing") is None


def test_entries_are_read_with_their_limits() -> None:
    quotas = table('{"billing": {"rate": 2.5, "burst": 10, "max_pending": 500}, "*": {"rate": 1}}')

    assert quotas.entry_of("billing") == ("billing", SourceQuota(2.5, 10, 500))
    assert quotas.entry_of("anyone") == ("*", SourceQuota(rate=1.0))


def test_a_sources_own_entry_replaces_the_default_even_when_empty() -> None:
    quotas = table('{"*": {"max_pending": 10}, "ops": {}}')

    assert quotas.entry_of("ops") is None
    assert quotas.entry_of("billing") == ("*", SourceQuota(max_pending=10))


@pytest.mark.parametrize(
    ("rate", "burst", "size"),
    [(4.0, None, 4), (0.2, None, 1), (2.5, None, 3), (1.0, 50, 50)],
)
def test_the_burst_defaults_to_one_seconds_worth_and_at_least_one(
    rate: float, burst: int | None, size: int
) -> None:
    assert SourceQuota(rate=rate, burst=burst).bucket_size == size


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[]", "JSON object"),
        ("{not json", "JSON object"),
        ('{"billing": 5}', "billing"),
        ('{"billing": {"rate": 1, "per": "minute"}}', "per"),
        ('{"billing": {"rate": 0}}', "rate must be positive"),
        ('{"billing": {"rate": -1}}', "rate must be positive"),
        ('{"billing": {"rate": "5"}}', "billing.rate must be a number"),
        ('{"billing": {"rate": true}}', "billing.rate must be a number"),
        ('{"billing": {"burst": 5}}', "burst needs a rate"),
        ('{"billing": {"rate": 1, "burst": 0}}', "burst must be at least 1"),
        ('{"billing": {"rate": 1, "burst": 1.5}}', "billing.burst must be an integer"),
        ('{"billing": {"max_pending": -1}}', "max_pending must not be negative"),
        ('{"billing": {"max_pending": 10.0}}', "billing.max_pending must be an integer"),
        # A rate whose wait can't be told (a 500 on every submission of the source before).
        ('{"billing": {"rate": Infinity}}', "billing.rate must be from 3.2e-09"),
        ('{"billing": {"rate": 1e999}}', "billing.rate must be from 3.2e-09"),
        ('{"billing": {"rate": NaN}}', "billing.rate must be from 3.2e-09"),
        ('{"billing": {"rate": 5e-324}}', "billing.rate must be from 3.2e-09"),
        ('{"billing": {"rate": 1, "burst": 2147483648}}', "billing.burst must be at most"),
        ('{"billing": {"max_pending": 1' + "0" * 400 + "}}", "billing.max_pending must be at"),
        ('{" ": {"max_pending": 1}}', "1 to 100 characters"),
        ('{"' + "s" * 101 + '": {"max_pending": 1}}', "1 to 100 characters"),
    ],
)
def test_a_bad_table_is_refused_at_start_up_naming_the_variable_and_the_fault(
    text: str, names: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        table(text)

    assert "TIMEFUSE_SOURCE_QUOTAS" in str(raised.value)
    assert names in str(raised.value)


def test_a_burst_without_a_rate_is_refused_with_exactly_that_reason() -> None:
    with pytest.raises(ConfigError) as raised:
        table('{"billing": {"burst": 5}}')

    assert str(raised.value) == "TIMEFUSE_SOURCE_QUOTAS: billing: burst needs a rate"
