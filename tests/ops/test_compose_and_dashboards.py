"""The compose stack is a valid Compose file (against the compose-spec JSON schema, vendored from
github.com/compose-spec/compose-spec, since this machine has no `docker compose`), every file it
mounts exists, and every metric the dashboards and alert rules query is one the services export."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import prometheus_client
import yaml

import services.core.metrics  # noqa: F401 - registers every metric

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_is_valid_under_the_compose_spec() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.validate(COMPOSE, schema)


def test_stack_has_kafka_kraft_redis_postgres_observability_and_every_service() -> None:
    services = COMPOSE["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:") and "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert {"redis-bank", "redis-partner", "postgres", "otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    for name in ("ingest", "scoring", "dispatch", "exchange", "reporting", "partner", "console"):
        service = services[name]
        assert service["command"][0] == f"services.{name}.app" and service["build"] == "."
        assert service["healthcheck"]["test"] and service["read_only"] is True
        for dependency, condition in service["depends_on"].items():
            assert dependency in services and condition["condition"].startswith("service_")
    assert services["partner"]["environment"]["REDIS_URL"] != services["scoring"]["environment"]["REDIS_URL"]


def test_every_mounted_file_and_the_dockerfile_exist() -> None:
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M), "the image must not run as root"
    assert all(":" in line.split()[1] and "latest" not in line for line in dockerfile.splitlines() if line.startswith("FROM"))


def _exported_metric_names() -> set[str]:
    names = set()
    for metric in prometheus_client.REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        if metric.type == "histogram":
            names |= {f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"}
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
    return names


def _queried_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\b(cipherstream_[a-z_]+)", expression))


def test_dashboards_and_alerts_query_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    expressions = []
    for path in (REPO / "ops" / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
        expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((REPO / "ops" / "prometheus" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(expressions) >= 15
    for expression in expressions:
        unknown = _queried_metrics(expression) - exported
        assert not unknown, f"{expression!r} queries metrics no service exports: {unknown}"
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["summary"]
