"""Database URLs in messages and logs: no password, wherever the URL carries it."""

from __future__ import annotations

import pytest

from timefuse.config import StoreSettings
from timefuse.config.sections import redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://timefuse:hunter2@db:5432/tf", "postgresql://db:5432/tf"),
        ("postgresql://db/tf?password=hunter2", "postgresql://db/tf?password=***"),
        (
            "postgresql://db/tf?sslmode=require&PASSWORD=hun@ter2&connect_timeout=5",
            "postgresql://db/tf?sslmode=require&PASSWORD=***&connect_timeout=5",
        ),
        ("postgresql://u@db/tf?sslpassword=hunter2", "postgresql://db/tf?sslpassword=***"),
        ("postgres://u:p@ss@db/tf", "postgres://db/tf"),
        ("sqlite:///./timefuse.db", "sqlite:///./timefuse.db"),
        ("db/tf?password=hunter2", "db/tf?password=***"),
    ],
)
def test_a_password_in_the_user_part_or_the_query_string_is_not_shown(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_a_query_string_password_stays_out_of_the_settings_repr() -> None:
    settings = StoreSettings.from_env({"DATABASE_URL": "postgresql://db/tf?password=hunter2"})
    assert "hunter2" not in repr(settings)
    assert "db/tf" in repr(settings)
