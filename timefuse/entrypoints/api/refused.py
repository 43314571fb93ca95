"""The ingest records the Kafka consumer refused, as the admin API and the console show them.

The records live on the dead letter topic (``<ingest topic>.dlq``), written by the ingest
consumer; reading them back is the Kafka adapter's
(:class:`~timefuse.adapters.kafka.dead_letters.KafkaDeadLetterReader`). Only the API process
reads them, so the interface it needs is declared here, and both the admin operation and the
console's page go through :func:`refused_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from timefuse.config import KafkaSettings
from timefuse.entrypoints.api.models import RefusedRecordOut
from timefuse.plugins.kafka import cluster_clients

DEFAULT_REFUSED = 50
MAX_REFUSED = 500


class RefusedRecord(Protocol):
    """One refused record: where it lies, why it was refused, and its start."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def value_bytes(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def origin(self) -> str | None: ...


class RefusedRecords(Protocol):
    """The dead letter topic, read on demand.

    ``newest`` returns up to ``limit`` records, the newest first, and raises
    :class:`~timefuse.ports.ingest.StreamUnavailable` when the cluster doesn't answer.
    """

    @property
    def topic(self) -> str: ...

    async def newest(self, limit: int) -> Sequence[RefusedRecord]: ...


def refused_records(kafka: KafkaSettings) -> RefusedRecords | None:
    """The reader of the dead letter topic; ``None`` without Kafka (nothing is refused)."""
    if not kafka.enabled:
        return None
    # Imported here: confluent-kafka loads only when Kafka is configured.
    from timefuse.adapters.kafka.dead_letters import KafkaDeadLetterReader

    return KafkaDeadLetterReader(cluster_clients(kafka), kafka.dead_letter_topic)


async def refused_rows(reader: RefusedRecords, limit: int) -> list[RefusedRecordOut]:
    """The newest ``limit`` refused records, as the API answers them."""
    return [
        RefusedRecordOut(
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=None if record.key is None else record.key.decode("utf-8", "replace"),
            error=record.error,
            origin=record.origin,
            value=record.value.decode("utf-8", "replace"),
            value_bytes=record.value_bytes,
            value_truncated=len(record.value) < record.value_bytes,
        )
        for record in await reader.newest(limit)
    ]
