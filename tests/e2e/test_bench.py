"""``timefuse bench`` as a user runs it: each scenario, short, reports its baseline and ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.process import TimefuseProcess

# Sizes are a few hundred events: enough to exercise each scenario whole, quick to run (the
# figures themselves come from full-size runs, docs/benchmarks.md).
# The bench starts its own timefuse on a temporary SQLite file unless these say otherwise.
_BACKENDS = ("DATABASE_URL", "DB_HOST", "KAFKA_BOOTSTRAP_SERVERS", "TIMEFUSE_CONCURRENCY")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _BACKENDS}
    # External plugins (the example file plugin) play no part in a benchmark.
    env["TIMEFUSE_PLUGINS"] = ""
    env.update(extra)
    return env


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "timefuse", "bench", *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def report_of(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = bench(*args, "--short", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_compared_with_baseline(report: dict[str, Any]) -> None:
    baseline = report["baseline"]
    assert baseline["rate_per_s"] > 0
    assert baseline["errors"] == 0
    assert report["results"][report["rate_key"]] > 0
    assert report["ratio"] == pytest.approx(
        report["results"][report["rate_key"]] / baseline["rate_per_s"]
    )
    assert report["errors"] == 0


def assert_all_delivered(report: dict[str, Any]) -> None:
    results = report["results"]
    assert results["delivered"] == report["parameters"]["events"]
    assert results["missing"] == 0
    assert results["failed_attempts"] == 0
    assert 0 <= results["lateness_p50_s"] <= results["lateness_p99_s"] <= results["lateness_max_s"]


def test_ingest_reports_the_persisted_rate_against_raw_inserts() -> None:
    report = report_of("ingest", "-n", "300")

    assert report["scenario"] == "ingest"
    assert report["rate_key"] == "persist_rate_per_s"
    assert report["baseline"]["name"] == "raw sqlite insert_many"
    assert report["results"]["time_to_persist_s"] > 0
    assert_compared_with_baseline(report)


def test_ingest_of_single_posts_stores_each_event_and_reports_its_rate() -> None:
    report = report_of("ingest", "--single", "-n", "120", "--concurrency", "6")

    assert report["parameters"]["batch"] == 1
    assert report["parameters"]["concurrency"] == 6
    assert report["results"]["time_to_persist_s"] > 0
    assert report["results"]["batch_latency_p50_s"] <= report["results"]["batch_latency_p99_s"]
    assert_compared_with_baseline(report)


@pytest.mark.parametrize("scenario", ["deliver-http", "herd"])
def test_events_due_at_once_are_all_delivered_and_compared_with_raw_aiohttp(
    scenario: str,
) -> None:
    report = report_of(scenario, "-n", "150")

    assert report["scenario"] == scenario
    assert report["baseline"]["name"] == "raw aiohttp POST"
    assert_all_delivered(report)
    assert_compared_with_baseline(report)
    assert report["results"]["peak_rss_mb"] > 0
    assert report["results"]["claims"] >= 1


def test_steady_delivers_a_constant_rate_with_lateness_percentiles() -> None:
    report = report_of("steady", "--rate", "100", "--duration", "1")

    assert report["parameters"]["rate"] == 100
    assert report["parameters"]["events"] == 100
    assert_all_delivered(report)
    assert_compared_with_baseline(report)


def test_cron_compares_the_libraries_on_the_dst_rules_and_speed() -> None:
    report = report_of("cron", "-n", "200")

    results = report["results"]
    assert report["parameters"]["schedules"] == 200
    # 3 zones x 2 changes x each expression, checked against the rules applied by brute force.
    assert results["dst_cases"] == 6 * report["parameters"]["expressions"]
    assert results["dst_wrong_timefuse"] == 0
    assert results["dst_wrong_croniter_rules"] == 0
    assert {"dst_wrong_cronsim", "dst_wrong_croniter"} <= set(results)
    assert report["unit"] == "next instants/s"
    assert_compared_with_baseline(report)


def schedules_report(store: str, *extra: str) -> dict[str, Any]:
    # Every 5 s: two instants (20 occurrences), the first a lookahead or more after declaring.
    report = report_of(
        "schedules", "-n", "10", "--stores", store, "--every", "5", "--duration", "10", *extra
    )
    results = report["results"]
    assert report["errors"] == 0
    assert report["target"]["stores"] == store
    assert results[f"{store}_occurrences_expected"] == 20
    assert results[f"{store}_occurrences_created"] == 20
    assert (results[f"{store}_occurrences_missing"], results[f"{store}_stored_twice"]) == (0, 0)
    assert results[f"{store}_delivered"] == 20
    # Created ahead of the instant (the planner's lookahead), delivered after it.
    assert (
        results[f"{store}_created_lateness_max_s"]
        < 0
        <= results[f"{store}_delivered_lateness_p50_s"]
    )
    return report


@pytest.mark.slow
def test_schedules_creates_and_delivers_every_occurrence_once() -> None:
    schedules_report("sqlite")


@pytest.mark.slow
@pytest.mark.postgres
def test_schedules_on_postgres_creates_and_delivers_every_occurrence_once(
    postgres_dsn: str,
) -> None:
    # The bench makes its own database on the server of --database-url, and drops it after.
    report = schedules_report("postgres", "--database-url", postgres_dsn)
    assert not any(name.startswith("sqlite_") for name in report["results"])


def test_the_table_is_the_default_output() -> None:
    result = bench("deliver-http", "--short", "-n", "50")

    assert result.returncode == 0, result.stderr
    assert "baseline: raw aiohttp POST" in result.stdout
    assert "ratio (drain rate / baseline)" in result.stdout


async def test_bench_drives_a_running_deployment_by_url(
    timefuse: Callable[..., TimefuseProcess],
) -> None:
    process = timefuse({"TIMEFUSE_PLUGINS": ""})

    report = report_of("deliver-http", "-n", "100", "--url", process.base_url)

    assert report["target"] == {"url": process.base_url, "self_hosted": False}
    assert_all_delivered(report)
    assert_compared_with_baseline(report)
    # Without /proc access to the deployment, memory comes from its /metrics.
    assert report["results"]["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["herd", "-n", "0"], "-n/--events: must be at least 1"),
        (["herd", "--concurrency", "lots"], "--concurrency: must be a whole number"),
        (["herd", "--rate", "10"], "--rate applies to the steady and day scenarios only"),
        (["herd", "--duration", "10"], "--duration applies to the steady and schedules"),
        (["steady", "--duration", "-1"], "--duration: must be a positive number"),
        (["steady", "-n", "10"], "drop -n/--events"),
        (["ingest", "--url", "localhost:8080"], "--url: must be an http:// or https:// URL"),
        (
            ["ingest", "--url", "http://x", "--profile", "p"],
            "--profile and --serve-log need the bench's own",
        ),
        (["stampede"], "invalid choice: 'stampede'"),
        (["cron", "--url", "http://x"], "cron runs in-process with no deployment; drop --url"),
        (["store", "--concurrency", "4"], "store runs in-process with no deployment"),
        (["herd", "--backend", "sqlite"], "--backend applies to the store and tenant-pages"),
        (["console", "--database-url", "postgresql://x/y"], "--database-url applies to the"),
        (["herd", "--receivers", "5"], "--receivers applies to the store scenario only"),
        (["herd", "--keep", "/tmp/x"], "--keep applies to the console scenario only"),
        (["ingest-backlog", "--url", "http://x"], "drop --url"),
        (["herd", "--single"], "--single applies to the ingest scenario only"),
        (["herd", "--runs", "0"], "--runs: must be at least 1"),
        (["herd", "--stores", "sqlite"], "--stores, --idle and --every apply to the schedules"),
        (["herd", "--every", "5"], "--stores, --idle and --every apply to the schedules"),
        (["schedules", "--every", "7"], "--every: must divide 60"),
        (["schedules", "--stores", "oracle"], "--stores: must be a comma-separated list"),
        (["schedules", "--url", "http://x"], "schedules starts its own timefuse"),
        (["schedules", "--rate", "5"], "--rate applies to the steady and day scenarios only"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = bench(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("scenario", ["deliver-kafka", "kafka-type", "ingest-backlog"])
def test_kafka_scenarios_without_a_cluster_say_what_they_need(scenario: str) -> None:
    result = bench(scenario, "--short")

    assert result.returncode == 2
    assert f"{scenario} needs a Kafka cluster: set KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_store_compares_the_adapter_with_its_bare_driver_and_repeats_with_runs() -> None:
    report = report_of("store", "--runs", "2")

    assert report["baseline"]["name"] == "raw sqlite claim and complete"
    assert report["parameters"]["runs"] == 2
    results = report["results"]
    assert results["claims"] == 4  # 2,000 events in claims of 500
    assert results["insert_rate_per_s"] > 0
    assert results["retention_rate_per_s"] > 0
    assert_compared_with_baseline(report)
    runs = report["runs"]
    assert len(runs) == 2
    rates = sorted(run["claim_complete_rate_per_s"] for run in runs)
    assert results["claim_complete_rate_per_s"] == pytest.approx(sum(rates) / 2)


@pytest.mark.postgres
def test_store_on_postgres_claims_as_dispatchers_do_there_over_many_receivers(
    postgres_dsn: str,
) -> None:
    report = report_of("store", "--receivers", "50", "--database-url", postgres_dsn)

    assert report["target"]["store"] == "postgresql"
    assert report["parameters"]["receivers"] == 50
    results = report["results"]
    assert results["claims"] == 4  # 2,000 events in claims of 500
    # Within the cap of 100 per receiver, claims of 100: 2,000 events in 20.
    assert results["shared_claims"] == 20
    assert results["shared_mean_claim_s"] > 0
    assert report["errors"] == 0  # every event of both passes completed and deleted


def test_console_times_each_page_on_a_large_and_a_small_store() -> None:
    report = report_of("console", "-n", "3000")

    results = report["results"]
    assert report["parameters"]["small"] == 1000
    pages = ("overview", "events_first_page", "dead_letters", "destinations", "schedules",
             "schedule", "events_by_rare_receiver")  # fmt: skip
    for page in pages:
        assert results[f"{page}_small_s"] > 0
        assert results[f"{page}_large_s"] > 0
        assert results[f"{page}_growth"] == pytest.approx(
            results[f"{page}_large_s"] / results[f"{page}_small_s"]
        )
    assert report["errors"] == 0


def test_tenant_pages_times_a_rare_sources_reads_against_an_unfiltered_page() -> None:
    report = report_of("tenant-pages", "-n", "3000")

    results = report["results"]
    assert report["parameters"]["small"] == 300
    for read in ("rare_page", "rare_next_page", "rare_dead_letters"):
        assert results[f"{read}_s"] > 0
        assert results[f"{read}_vs_unfiltered"] == pytest.approx(
            results[f"{read}_s"] / results["unfiltered_page_s"]
        )
        assert results[f"{read}_growth"] == pytest.approx(
            results[f"{read}_s"] / results[f"{read}_small_store_s"]
        )
    assert report["errors"] == 0


def test_http_type_compares_the_delivery_type_alone_with_raw_aiohttp() -> None:
    report = report_of("http-type")

    assert report["baseline"]["name"] == "raw aiohttp POSTs"
    assert report["results"]["failed_deliveries"] == 0
    assert report["results"]["deliver_cpu_per_request_us"] > 0
    assert_compared_with_baseline(report)


@pytest.mark.kafka
def test_kafka_type_compares_the_delivery_type_alone_with_a_raw_producer(
    kafka: KafkaBroker,
) -> None:
    report = report_of("kafka-type", "--kafka", kafka.bootstrap_servers)

    assert report["baseline"]["name"] == "raw confluent-kafka producer"
    assert report["results"]["failed_deliveries"] == 0
    assert_compared_with_baseline(report)


@pytest.mark.kafka
def test_ingest_backlog_drains_a_filled_topic_into_the_store(kafka: KafkaBroker) -> None:
    report = report_of("ingest-backlog", "--kafka", kafka.bootstrap_servers)

    assert report["baseline"]["name"] == "raw confluent-kafka producer, same envelopes"
    assert report["target"]["store"] == "sqlite"
    assert 0 < report["results"]["stored_in_first_batches"] <= report["parameters"]["events"]
    assert_compared_with_baseline(report)


@pytest.mark.kafka
def test_deliver_kafka_puts_every_event_on_the_topic_and_compares_with_a_raw_producer(
    kafka: KafkaBroker,
) -> None:
    report = report_of(
        "deliver-kafka", "-n", "150", env=_env(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    )

    assert report["baseline"]["name"] == "raw confluent-kafka producer"
    assert report["target"]["ingest"] == "kafka"
    assert_all_delivered(report)
    assert_compared_with_baseline(report)
