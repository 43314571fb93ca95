"""Apache Kafka as the ingest buffer: the API produces, `timefuse ingest` consumes."""

from __future__ import annotations

from timefuse.adapters.kafka.buffer import KafkaIngestBuffer
from timefuse.adapters.kafka.clients import KafkaClientSettings, TopicSpec
from timefuse.adapters.kafka.stream import KafkaIngestStream

__all__ = ["KafkaClientSettings", "KafkaIngestBuffer", "KafkaIngestStream", "TopicSpec"]
