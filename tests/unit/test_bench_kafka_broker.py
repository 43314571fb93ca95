"""The local Kafka broker's pieces that need no JVM: where its jars come from, its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from timefuse.bench.kafka_broker import (
    ENV_LIBS,
    KafkaBrokerError,
    find_kafka_libs,
    free_ports,
    server_properties,
)


def test_a_named_jar_directory_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_LIBS, str(tmp_path))
    assert find_kafka_libs() == tmp_path


def test_a_named_jar_directory_that_does_not_exist_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(ENV_LIBS, str(missing))
    with pytest.raises(KafkaBrokerError, match=r"nowhere.*is not a directory"):
        find_kafka_libs()


def test_the_broker_listens_on_loopback_and_never_creates_topics_itself(tmp_path: Path) -> None:
    text = server_properties(9092, 9093, tmp_path / "data")
    settings = dict(line.split("=", 1) for line in text.splitlines())

    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["log.dirs"] == str(tmp_path / "data")
    assert settings["auto.create.topics.enable"] == "false"
    # One node: a replication factor above 1 would leave the internal topics uncreatable.
    assert settings["offsets.topic.replication.factor"] == "1"
    assert settings["transaction.state.log.replication.factor"] == "1"


def test_free_ports_are_distinct() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(0 < port < 65536 for port in ports)
