"""TIMEFUSE_DATABASE_READ_URL: a PostgreSQL replica for reads, checked at start-up."""

from __future__ import annotations

import pytest

from timefuse.config import StoreSettings
from timefuse.config.declare import ConfigError

PRIMARY = "postgresql://timefuse:primary-secret@db-primary:5432/timefuse"
REPLICA = "postgresql://reader:replica-secret@db-replica:5432/timefuse"


def test_a_replica_url_is_read_with_its_lag_limit() -> None:
    settings = StoreSettings.from_env(
        {
            "DATABASE_URL": PRIMARY,
            "TIMEFUSE_DATABASE_READ_URL": REPLICA,
            "TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS": "5",
        }
    )
    assert settings.read_url == REPLICA
    assert settings.read_max_lag_seconds == 5.0


def test_no_replica_by_default() -> None:
    settings = StoreSettings.from_env({"DATABASE_URL": PRIMARY})
    assert settings.read_url == ""
    assert settings.read_max_lag_seconds == 30.0


def test_neither_password_reaches_the_settings_repr() -> None:
    settings = StoreSettings.from_env(
        {"DATABASE_URL": PRIMARY, "TIMEFUSE_DATABASE_READ_URL": REPLICA}
    )
    text = repr(settings)
    assert "db-replica:5432/timefuse" in text
    assert "secret" not in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DATABASE_URL": PRIMARY, "TIMEFUSE_DATABASE_READ_URL": "mysql://reader@x/db"},
            "TIMEFUSE_DATABASE_READ_URL must be a postgresql:// URL, got 'mysql://x/db'",
        ),
        (
            {"DATABASE_URL": "sqlite:///t.db", "TIMEFUSE_DATABASE_READ_URL": REPLICA},
            "TIMEFUSE_DATABASE_READ_URL needs a PostgreSQL event store",
        ),
        (
            {"DATABASE_URL": PRIMARY, "TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS": "-1"},
            "TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS",
        ),
    ],
)
def test_a_replica_setting_that_cannot_work_is_refused_by_name(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        StoreSettings.from_env(env)
    assert message in str(raised.value)
