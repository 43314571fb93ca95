"""Event ids (UUIDv7 by creation time) and the conversion of instants to UTC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from timefuse.domain.event import new_event_id, to_utc

NOW = datetime(2030, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_every_event_id_is_a_version_7_rfc_4122_uuid_of_its_creation_millisecond() -> None:
    millis = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    ids = [new_event_id(NOW) for _ in range(200)]

    assert len(set(ids)) == len(ids)
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert value.int >> 80 == millis


def test_to_utc_converts_an_aware_instant() -> None:
    berlin = datetime.fromisoformat("2030-06-01T03:00:00+02:00")

    assert to_utc(berlin).isoformat() == "2030-06-01T01:00:00+00:00"


def test_to_utc_refuses_a_naive_datetime_with_its_reason() -> None:
    with pytest.raises(ValueError, match="naive") as caught:
        to_utc(datetime(2030, 1, 1))
    assert str(caught.value) == "a naive datetime has no offset"
