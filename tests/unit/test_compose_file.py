"""docker-compose.yml, the Dockerfile and the monitoring files fit together.

Docker itself validates the compose file when an engine answers; the rest is read as YAML and
JSON, so the checks run on machines without Docker too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from tests.support.docker import docker_available
from timefuse.config import ApiSettings
from timefuse.entrypoints.auth import Role, load_keys
from timefuse.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "timefuse.json"

TIMEFUSE_ROLES = {"api": "api", "ingest": "ingest", "dispatch": "dispatch"}
LONG_RUNNING = {"postgres", "kafka", "api", "ingest", "dispatch", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_the_compose_file_is_accepted(compose: dict[str, Any]) -> None:
    """By ``docker compose config`` where a Docker engine and Compose answer; otherwise the
    file must at least be a Compose document (the checks below look at its contents)."""
    docker = shutil.which("docker")
    if docker is not None and docker_available() and _has_compose(docker):
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    top_level = {key for key in compose if not key.startswith("x-")}  # x-*: Compose extensions
    assert top_level <= {"name", "services", "volumes", "networks", "configs", "secrets"}
    assert all("image" in svc or "build" in svc for svc in compose["services"].values())


def _has_compose(docker: str) -> bool:
    # The engine may answer while the Compose plugin is missing (`docker compose` unknown).
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_every_part_of_the_system_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "kafka", "migrate", *TIMEFUSE_ROLES, "prometheus", "grafana"} <= set(
        services
    )
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_each_timefuse_role_runs_from_the_repositorys_image_with_its_command(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, command in {**TIMEFUSE_ROLES, "migrate": "migrate"}.items():
        service = services[name]
        assert service["build"]["context"] == "."
        assert service["command"] == [command]
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test"), name
        assert not check.get("disable"), name


def test_roles_start_after_migrations_and_a_healthy_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in TIMEFUSE_ROLES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka"]["condition"] == "service_healthy", name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_published_ports_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    def published(name: str) -> set[str]:
        # "[host_ip:]host_port:container_port": the host port is second from the end.
        return {str(port).split(":")[-2] for port in services[name].get("ports", [])}

    assert "8080" in published("api")
    assert "9090" in published("prometheus")
    assert "3000" in published("grafana")
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_prometheus_scrapes_every_timefuse_process_where_it_serves_metrics(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                targets[name] = sd["port"]
    assert targets["api"] == 8080
    for name in ("ingest", "dispatch"):
        assert targets[name] == int(services[name]["environment"]["TIMEFUSE_METRICS_PORT"])
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_prometheus_scrapes_with_a_key_that_may_read_metrics() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ring = load_keys(DEPLOY / "timefuse" / "api-keys.toml")
    for job in config["scrape_configs"]:
        if job["job_name"].startswith("timefuse-"):
            key = ring.find(job["authorization"]["credentials"])
            assert key is not None, job["job_name"]
            assert Role.METRICS in key.roles or Role.ADMIN in key.roles


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "timefuse.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_path}:ro" in services["grafana"]["volumes"]


def _exposed_names(metric: Metric) -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }[metric.type]
    return {metric.name + suffix for suffix in suffixes}


def test_the_dashboard_only_queries_metrics_timefuse_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\btimefuse_[a-z0-9_]+", expr)}
    exported = set().union(*(_exposed_names(m) for m in Metrics().registry.collect()))
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    for wanted in (
        "timefuse_delivery_lateness_seconds_bucket",
        "timefuse_delivery_duration_seconds_bucket",
        "timefuse_events",
        "timefuse_ingest_consumer_lag",
    ):
        assert wanted in used, wanted


def test_alert_rules_cover_lateness_dead_letters_lag_and_breakers() -> None:
    rules_file = ROOT / "deploy" / "prometheus" / "alerts.yml"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    used = {name for r in rules for name in re.findall(r"\btimefuse_[a-z0-9_]+", r["expr"])}
    exported = set().union(*(_exposed_names(m) for m in Metrics().registry.collect()))
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    for wanted in (
        "timefuse_delivery_lateness_seconds_bucket",
        "timefuse_events_dead_lettered_total",
        "timefuse_ingest_consumer_lag",
        "timefuse_destination_breaker_trips_total",
    ):
        assert wanted in used, wanted
    assert all(r["alert"].startswith("Timefuse") and r["annotations"]["summary"] for r in rules)


def test_the_image_runs_as_a_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users, "the image never leaves root"
    assert users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)


def test_the_api_gets_a_keys_file_it_can_load(services: dict[str, dict[str, Any]]) -> None:
    # Without keys the API refuses to listen beyond loopback, which a container must do.
    from timefuse.entrypoints.auth import load_key_ring

    inside = services["api"]["environment"]["TIMEFUSE_API_KEYS_FILE"]
    mounts = dict(str(m).split(":")[:2][::-1] for m in services["api"]["volumes"])
    directory, name = inside.rsplit("/", 1)
    on_host = ROOT / mounts[directory] / name
    keys = load_key_ring(ApiSettings.from_env({"TIMEFUSE_API_KEYS_FILE": str(on_host)}))
    assert keys is not None
    assert len(keys) >= 1


def test_the_api_and_the_dispatchers_share_the_signing_keyring(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """A key added through the API's admin endpoint reaches the processes that sign."""

    def keyring_mount(name: str) -> tuple[str, str, str]:
        path = services[name]["environment"]["TIMEFUSE_SIGNING_KEYS_FILE"]
        for mount in services[name]["volumes"]:
            source, target, *mode = str(mount).split(":")
            if path.startswith(target.rstrip("/") + "/"):
                return source, target, mode[0] if mode else "rw"
        raise AssertionError(f"{name}: {path} is on no volume")

    api_source, api_target, api_mode = keyring_mount("api")
    dispatch_source, dispatch_target, _ = keyring_mount("dispatch")
    assert api_source == dispatch_source, "the two processes see different keyrings"
    assert api_source in compose["volumes"]  # a named volume, not a host path
    assert api_target == dispatch_target
    assert api_mode == "rw"  # the API rewrites the file (and its lock) there
    # The image makes the mount point as its own user, so a new volume is writable by it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    made = re.search(rf"^RUN mkdir .*{re.escape(api_target)}\s*$", dockerfile, re.MULTILINE)
    assert made is not None
    assert made.start() > dockerfile.rindex(f"USER {users[-1]}")
