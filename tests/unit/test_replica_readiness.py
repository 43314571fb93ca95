"""The read replica's part of readiness: its lag shown while within the limit, a reason when not."""

from __future__ import annotations

import asyncio

import pytest

from timefuse.entrypoints import runner
from timefuse.entrypoints.runner import replica_readiness
from timefuse.ports.store import StoreUnavailable


class Replica:
    def __init__(self, lag: float | None = None, error: Exception | None = None) -> None:
        self._lag, self._error = lag, error

    async def replica_lag(self) -> float:
        if self._error is not None:
            raise self._error
        if self._lag is None:
            await asyncio.sleep(3600)
        assert self._lag is not None
        return self._lag


async def test_a_replica_within_the_limit_is_ok_with_its_lag() -> None:
    assert await replica_readiness(Replica(2.34), max_lag=30.0) == "ok, 2.3 s behind the primary"


async def test_a_replica_past_the_limit_says_how_far_behind_and_the_setting() -> None:
    state = await replica_readiness(Replica(45.0), max_lag=30.0)
    assert state == "45.0 s behind the primary (TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS is 30)"


async def test_an_unreachable_replica_gives_the_store_s_reason() -> None:
    state = await replica_readiness(Replica(error=StoreUnavailable("connection refused")), 30.0)
    assert state == "connection refused"


async def test_a_replica_that_does_not_answer_in_time_is_not_ok(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "READINESS_PART_SECONDS", 0.01)
    assert await replica_readiness(Replica(), max_lag=30.0) == "no answer within 0.01 s"
