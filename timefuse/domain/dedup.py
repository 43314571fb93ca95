"""The id a submitted event gets: derived from its dedup key, so a resubmission has the same one.

An event is the same event as a stored one when it has the same ``(source, external_job_id,
scheduled_at)``. Deriving the id from that key lets every process answer a submission with
the id the event has (or will have) in the store, without looking anything up: the API with
Kafka in front of the store, a client's retry after a timeout, two identical items of one
batch.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from timefuse.domain.text import storable

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Keeps these ids apart from any other id derived from a hash (schedule occurrences).
_DOMAIN = b"timefuse.event\x00"


def dedup_event_id(source: str, external_job_id: str, scheduled_at: datetime) -> str:
    """The id of the event with this dedup key; the same key always gives the same id.

    A UUID shaped as version 7 (like :func:`timefuse.domain.event.new_event_id`): its 48 time
    bits are ``scheduled_at`` in milliseconds, so ids sort roughly by due time and events due
    together sit together in indexes; its 74 other free bits come from a SHA-256 of the key.
    The key is read as the store compares it: the instant in UTC to the microsecond (so
    ``10:00+02:00`` and ``08:00Z`` are one key), the text as the store keeps it.
    """
    if scheduled_at.tzinfo is None:
        raise ValueError("scheduled_at must be timezone-aware")
    micros = (scheduled_at - _EPOCH) // _MICROSECOND
    key = "\x00".join((storable(source) or "", storable(external_job_id) or "", str(micros)))
    digest = hashlib.sha256(_DOMAIN + key.encode("utf-8")).digest()
    millis = (micros // 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(digest[:10], "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))
