"""The Helm chart renders with Helm's own engine for both parties, every manifest validates against
the Kubernetes schemas, k8s/ is the fresh render, and the availability and isolation properties the
regulator asks for hold on every Deployment."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import lint

from tests.deploy.render import CHART, PARTIES, REPO, as_yaml, render

KUBERNETES_VERSION = "1.30"
# ServiceMonitor and PrometheusRule are CRDs of the Prometheus operator: kubernetes-validate has no
# schema for them; their shape is checked by the assertions below instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
BANK_SERVICES = {"ingest", "scoring", "dispatch", "exchange"}


@pytest.fixture(scope="module", params=PARTIES)
def party(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def _of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["labels"].get("app.kubernetes.io/name", document["metadata"]["name"]): document
            for document in documents if document["kind"] == kind}


def test_chart_lints_clean() -> None:
    for party_name in PARTIES:
        values = yaml.safe_load((CHART / f"values-{party_name}.yaml").read_text())
        report = lint(str(CHART), values, strict=True, kube_version="v1.30.0")
        assert report["total_charts_linted"] == 1 and not report["errors"], report
        assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]  # warnings and errors


def test_every_manifest_validates_against_the_kubernetes_schemas(party: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = party
    for document in documents:
        if document["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_rendered_k8s_folder_is_the_fresh_render(party: tuple[str, list[dict[str, Any]]]) -> None:
    name, documents = party
    assert (REPO / "k8s" / f"{name}.yaml").read_text() == as_yaml(documents), "run `make k8s` and commit k8s/"


def test_each_party_deploys_only_its_own_services(party: tuple[str, list[dict[str, Any]]]) -> None:
    name, documents = party
    deployed = set(_of_kind(documents, "Deployment"))
    assert deployed == (BANK_SERVICES if name == "bank" else {"partner"})


def test_deployments_are_spread_hardened_probed_and_budgeted(party: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = party
    budgets, policies, autoscalers = (_of_kind(documents, kind) for kind in
                                      ("PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler"))
    for service, deployment in _of_kind(documents, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        assert pod["affinity"]["podAntiAffinity"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(container)
        assert service in budgets and service in policies
        single_active = deployment["spec"]["strategy"]["type"] == "Recreate"
        assert (service in autoscalers) != single_active
        if service in ("exchange", "partner"):
            assert single_active and any(v["name"] == "keys" and v["secret"]["defaultMode"] == 0o400 for v in pod["volumes"])


def test_network_policies_open_only_the_party_s_own_parts_and_the_exchange(party: tuple[str, list[dict[str, Any]]]) -> None:
    name, documents = party
    for service, policy in _of_kind(documents, "NetworkPolicy").items():
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])}
        assert 53 in ports and 4318 in ports  # DNS and the collector, always
        assert (5432 in ports) == (service == "scoring")  # only scoring keeps SQL state; never the partner
        assert (6379 in ports) == (service != "ingest")  # ingest keeps nothing
        exchange_peers = [rule for rule in policy["spec"]["egress"]
                          if any(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                                 == "exchange-kafka" for peer in rule.get("to", []))]
        assert bool(exchange_peers) == (service in ("exchange", "partner"))  # only they reach the shared cluster


def test_prometheus_rule_is_the_ops_alert_file(party: tuple[str, list[dict[str, Any]]]) -> None:
    _, documents = party
    [rule] = [document for document in documents if document["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((REPO / "ops" / "prometheus" / "alerts.yml").read_text())
    assert (CHART / "files" / "alerts.yml").read_text() == (REPO / "ops" / "prometheus" / "alerts.yml").read_text()
