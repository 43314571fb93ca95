"""A number setting is a time in seconds or a rate: finite and at most ten years' worth, so no
value an operator can type reaches a timer or a date as an overflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from timefuse.config import ApiSettings, ConfigError, DispatchSettings, MaintenanceSettings
from timefuse.domain.validation import build_event
from timefuse.entrypoints.bootstrap import submission_limits

TEN_YEARS = 10 * 365 * 86_400


@pytest.mark.parametrize("text", ["inf", "Infinity", "1e300", str(TEN_YEARS + 1)])
@pytest.mark.parametrize(
    ("section", "variable"),
    [
        (ApiSettings, "TIMEFUSE_PAST_GRACE_SECONDS"),
        (DispatchSettings, "TIMEFUSE_LEASE_SECONDS"),
        (DispatchSettings, "TIMEFUSE_DESTINATION_RATE"),
    ],
)
def test_a_number_beyond_ten_years_is_refused_naming_the_variable_and_the_bound(
    section: type[ApiSettings | DispatchSettings], variable: str, text: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        section.from_env({variable: text})
    message = str(refused.value)
    assert variable in message
    assert f"must be at most {TEN_YEARS}" in message


def test_the_longest_grace_accepts_a_submission_almost_ten_years_old() -> None:
    settings = ApiSettings.from_env({"TIMEFUSE_PAST_GRACE_SECONDS": str(TEN_YEARS)})
    now = datetime(2026, 12, 7, tzinfo=UTC)
    old = now - timedelta(seconds=TEN_YEARS - 60)
    event = build_event(
        {
            "external_job_id": "old-1",
            "source": "tests",
            "delivery_type": "http",
            "destination": "https://example.com/hook",
            "scheduled_at": old.isoformat(),
            "payload": b"{}",
        },
        event_id=None,
        now=now,
        limits=submission_limits(settings),
    )
    assert event.scheduled_at == old


def test_retention_days_beyond_a_hundred_years_stop_the_start() -> None:
    # A million days made every retention pass overflow its date: terminal events were kept.
    with pytest.raises(ConfigError, match="CLEANUP_RETENTION_DAYS must be between 0 and 36500"):
        MaintenanceSettings.from_env({"CLEANUP_RETENTION_DAYS": "1000000"})
    assert MaintenanceSettings.from_env({"CLEANUP_RETENTION_DAYS": "36500"}).retention_days == 36500
