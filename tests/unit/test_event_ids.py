"""Event ids (UUIDv7 by creation time) and the conversion of instants to UTC."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
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


def test_an_event_id_lays_out_time_version_random_bits_and_variant_as_rfc_9562_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 80 random bits: the top 6 dropped (111111), rand_a 0xabc, rand_b 0x0123456789abcdef.
    # fe af 01 = 111111 | 1010 1011 1100 | 000001, then 23 45 67 89 ab cd ef.
    draw = bytes.fromhex("feaf0123456789abcdef")
    monkeypatch.setattr("timefuse.domain.event.os.urandom", lambda n: draw)
    now = datetime(2023, 11, 14, 22, 13, 20, 999, tzinfo=UTC)  # 1_700_000_000_000 ms

    # unix_ts_ms 0x018bcfe56800 | ver 7 | rand_a abc | var 0b10 + rand_b 0123456789abcdef
    assert new_event_id(now) == "018bcfe5-6800-7abc-8123-456789abcdef"


def test_an_event_id_keeps_the_low_48_bits_of_a_time_before_1970(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("timefuse.domain.event.os.urandom", lambda n: bytes(10))
    one_ms_before_epoch = datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

    # -1 ms in 48 bits is 0xffffffffffff; the id is still a well-formed UUIDv7.
    assert new_event_id(one_ms_before_epoch) == "ffffffff-ffff-7000-8000-000000000000"


@pytest.fixture
def local_zone_india() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "IST-05:30"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.usefixtures("local_zone_india")
def test_to_utc_converts_an_aware_instant_whatever_the_machine_s_local_zone() -> None:
    berlin = datetime.fromisoformat("2030-06-01T03:00:00+02:00")

    assert to_utc(berlin).isoformat() == "2030-06-01T01:00:00+00:00"


def test_to_utc_refuses_a_naive_datetime_with_its_reason() -> None:
    with pytest.raises(ValueError, match="naive") as caught:
        to_utc(datetime(2030, 1, 1))
    assert str(caught.value) == "a naive datetime has no offset"
