from __future__ import annotations

import pytest

from timefuse.domain.outcome import (
    DeliveryOutcome,
    OutcomeKind,
    classify_http_status,
    excerpt,
    parse_retry_after,
)


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
    ],
)
def test_parses_retry_after_seconds_and_dates(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now_epoch=60.0) == expected


def test_long_errors_are_cut_to_an_excerpt() -> None:
    text = excerpt("x" * 5000)
    assert text is not None
    assert len(text) == 1000
    assert excerpt("short") == "short"
    assert excerpt(None) is None


def test_outcome_constructors() -> None:
    assert DeliveryOutcome.success().succeeded
    assert not DeliveryOutcome.retriable("e").succeeded
