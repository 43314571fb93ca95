from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.outcome import (
    DeliveryOutcome,
    OutcomeKind,
    classify_http_status,
    excerpt,
    parse_retry_after,
)

WEEK = 7 * 86400.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, OutcomeKind.SUCCESS),
        (201, OutcomeKind.SUCCESS),
        (204, OutcomeKind.SUCCESS),
        (301, OutcomeKind.PERMANENT),
        (302, OutcomeKind.PERMANENT),
        (304, OutcomeKind.PERMANENT),
        (400, OutcomeKind.PERMANENT),
        (401, OutcomeKind.PERMANENT),
        (404, OutcomeKind.PERMANENT),
        (408, OutcomeKind.RETRIABLE),
        (409, OutcomeKind.PERMANENT),
        (422, OutcomeKind.PERMANENT),
        (425, OutcomeKind.RETRIABLE),
        (429, OutcomeKind.RETRIABLE),
        (500, OutcomeKind.RETRIABLE),
        (502, OutcomeKind.RETRIABLE),
        (503, OutcomeKind.RETRIABLE),
        (599, OutcomeKind.RETRIABLE),
        (100, OutcomeKind.PERMANENT),
    ],
)
def test_classifies_http_statuses(status: int, kind: OutcomeKind) -> None:
    outcome = classify_http_status(status)
    assert outcome.kind is kind
    assert outcome.status_code == status


def test_a_redirect_says_it_was_not_followed() -> None:
    assert "not followed" in (classify_http_status(302).error or "")


def test_retry_after_is_carried_on_a_retriable_outcome() -> None:
    assert classify_http_status(503, 12.0).retry_after == 12.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("-3", None),
        # Not ASCII digits: str.isdigit() says yes to these, float() then raises.
        ("²", None),
        ("①", None),
        ("٣", None),
        ("１２", None),
        ("1.5", None),
        ("1e3", None),
        ("+5", None),
        ("0x10", None),
        ("\x00", None),
        ("5 5", None),
        # Huge waits are cut to a week; so is a date years ahead.
        ("604801", WEEK),
        ("9" * 5000, WEEK),
        ("Fri, 31 Dec 9999 23:59:59 GMT", WEEK),
        # Dates that can't be: out of range, impossible fields, absurd zones.
        ("Thu, 01 Jan 99999 00:00:00 GMT", None),
        ("Mon, 99 Jan 2020 00:00:00 GMT", None),
        ("Mon, 01 Jan 2020 25:00:00 GMT", None),
        ("Thu, 01 Jan 1970 00:01:40 +9999", None),
        # "-0000" (no zone known) is still GMT in HTTP.
        ("Thu, 01 Jan 1970 00:01:40 -0000", 40.0),
    ],
)
def test_parses_retry_after_seconds_and_dates(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now_epoch=60.0) == expected


@given(st.text(max_size=60) | st.from_regex(r"[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} [0-9]{1,6} .*"))
def test_any_retry_after_is_a_bounded_wait_or_none_and_never_raises(header: str) -> None:
    wait = parse_retry_after(header, now_epoch=1_750_000_000.0)
    assert wait is None or 0.0 <= wait <= WEEK


def test_long_errors_are_cut_to_an_excerpt() -> None:
    text = excerpt("x" * 5000)
    assert text is not None
    assert len(text) == 1000
    assert excerpt("short") == "short"
    assert excerpt(None) is None


def test_outcome_constructors() -> None:
    assert DeliveryOutcome.success().succeeded
    assert not DeliveryOutcome.retriable("e").succeeded


def test_an_error_of_exactly_the_excerpt_limit_is_kept_whole() -> None:
    assert excerpt("x" * 1000) == "x" * 1000
    cut = excerpt("x" * 1001)
    assert cut is not None
    assert (len(cut), cut[-1]) == (1000, "…")


def test_a_six_digit_retry_after_is_read_as_it_is() -> None:
    assert parse_retry_after("100000", 0.0) == 100000.0
    assert parse_retry_after("604800", 0.0) == 604800.0  # the 7-day limit itself
    assert parse_retry_after("6048000", 0.0) == 604800.0


def test_an_http_date_without_a_zone_is_gmt_whatever_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        now = datetime(2015, 10, 21, 7, 0, tzinfo=UTC).timestamp()
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now) == 1680.0
    finally:
        monkeypatch.undo()
        time.tzset()
