"""How many events of a destination one shared PostgreSQL claim reads at most (and locks)."""

from __future__ import annotations

from timefuse.adapters.postgres.store import _most_claimable
from timefuse.ports.store import ClaimRequest, DestinationRule, SharedLimits

KEY = "https://hooks.example:443"


def most(shared: SharedLimits, key: str = KEY, **request: object) -> int | None:
    return _most_claimable(shared, ClaimRequest("w", 500, 60.0, **request), key)  # type: ignore[arg-type]


def test_a_cap_less_what_this_worker_holds() -> None:
    shared = SharedLimits(default=DestinationRule(concurrency=100), mine={KEY: 70})
    assert most(shared) == 30


def test_a_rate_bounds_by_its_burst_and_a_full_cap_by_nothing_left() -> None:
    assert most(SharedLimits(default=DestinationRule(rate=10.0, burst=5))) == 5
    full = SharedLimits(default=DestinationRule(concurrency=10), mine={KEY: 12})
    assert most(full) == 0


def test_without_cap_or_rate_there_is_no_bound() -> None:
    assert most(SharedLimits(default=DestinationRule())) is None


def test_a_rule_for_the_key_or_its_bare_host_wins_over_the_defaults() -> None:
    default = DestinationRule()  # unbounded
    exact = SharedLimits(default=default, overrides={KEY: DestinationRule(concurrency=7)})
    host = SharedLimits(
        default=default, overrides={"https://hooks.example": DestinationRule(concurrency=4)}
    )
    assert (most(exact), most(host)) == (7, 4)


def test_with_no_rule_of_its_own_the_loosest_type_rule_counts() -> None:
    shared = SharedLimits(
        default=DestinationRule(concurrency=10),
        type_defaults={"http": DestinationRule(concurrency=50), "kafka": DestinationRule()},
    )
    assert most(shared) is None  # a kafka destination would have no cap
    typed = SharedLimits(
        default=DestinationRule(concurrency=10),
        type_defaults={"http": DestinationRule(concurrency=50)},
    )
    assert most(typed) == 50


def test_the_claims_own_budget_bounds_too() -> None:
    shared = SharedLimits(default=DestinationRule(concurrency=100))
    assert most(shared, budgets={KEY: 3}) == 3
    assert most(shared, default_budget=8) == 8
    assert most(SharedLimits(default=DestinationRule()), default_budget=8) == 8
