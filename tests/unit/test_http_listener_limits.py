"""The listener's connection cap: how many it holds, and which connection gives way."""

from __future__ import annotations

import resource

import pytest

from timefuse.config import ConfigError, Settings
from timefuse.entrypoints.http_connections import Connections, connection_cap


class FakeConnection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shed_count = 0

    def shed(self) -> None:
        self.shed_count += 1


def test_the_cap_is_the_setting_or_half_the_open_file_limit() -> None:
    assert connection_cap(2048, open_files=256) == 128
    assert connection_cap(100, open_files=65536) == 100
    assert connection_cap(2048, open_files=resource.RLIM_INFINITY) == 2048
    assert connection_cap(2048, open_files=1) == 1


def test_above_the_cap_the_longest_waiting_connection_is_shed() -> None:
    connections = Connections(cap=2)
    first, second, third = FakeConnection("1"), FakeConnection("2"), FakeConnection("3")
    for connection in (first, second):
        assert connections.admit(connection)

    assert connections.admit(third)

    assert (first.shed_count, second.shed_count, third.shed_count) == (1, 0, 0)
    assert len(connections) == 2


def test_a_connection_with_a_request_in_progress_is_never_shed() -> None:
    reasons: list[str] = []
    connections = Connections(cap=2, closed=reasons.append)
    busy, idle, new = FakeConnection("busy"), FakeConnection("idle"), FakeConnection("new")
    for connection in (busy, idle):
        connections.admit(connection)
    connections.works(busy)

    assert connections.admit(new)

    assert (busy.shed_count, idle.shed_count) == (0, 1)


def test_with_every_connection_busy_a_new_one_is_refused() -> None:
    connections = Connections(cap=1)
    busy, new = FakeConnection("busy"), FakeConnection("new")
    connections.admit(busy)
    connections.works(busy)

    assert not connections.admit(new)

    assert busy.shed_count == 0
    assert len(connections) == 1


def test_a_connection_that_waits_again_goes_to_the_back_of_the_line() -> None:
    connections = Connections(cap=2)
    first, second, third = FakeConnection("1"), FakeConnection("2"), FakeConnection("3")
    for connection in (first, second):
        connections.admit(connection)
    connections.works(first)  # a request...
    connections.waits(first)  # ...answered: first is now the most recent to wait

    connections.admit(third)

    assert (first.shed_count, second.shed_count) == (0, 1)


def test_limits_are_read_from_the_environment_and_checked() -> None:
    settings = Settings.from_env(
        {
            "TIMEFUSE_SERVER_MAX_CONNECTIONS": "10",
            "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS": "0.5",
            "TIMEFUSE_SERVER_MAX_HEADER_BYTES": "4096",
            "TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS": "2",
            "TIMEFUSE_SERVER_KEEPALIVE_SECONDS": "7",
        }
    )

    assert settings.server.max_connections == 10
    assert settings.server.header_timeout == 0.5
    assert settings.server.max_header_bytes == 4096
    assert settings.server.body_timeout == 2.0
    assert settings.server.keepalive_seconds == 7


@pytest.mark.parametrize(
    ("env", "bad"),
    [
        ("TIMEFUSE_SERVER_MAX_CONNECTIONS", "0"),
        ("TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS", "0"),
        ("TIMEFUSE_SERVER_MAX_HEADER_BYTES", "10"),
        ("TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS", "soon"),
        ("TIMEFUSE_SERVER_KEEPALIVE_SECONDS", "0"),
    ],
)
def test_a_limit_out_of_range_is_refused_by_name(env: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: bad})
