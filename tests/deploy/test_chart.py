"""The Helm chart renders with Helm's own engine for both parties, every manifest validates against
the Kubernetes schemas (and the Prometheus operator's CRD schemas), k8s/ is the fresh render, and the
availability and isolation properties hold on every Deployment."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import lint
from helm_python.errors import HelmError

from tests.deploy.render import ALERTS_IN_CHART, ALERTS_SOURCE, CHART, PARTIES, REPO, as_yaml, party_values, render
from tests.deploy.tools import tools_bin

# The stated target is 1.30; the chart's kubeVersion floor (1.27) and the newest schemas kubernetes-validate
# ships are checked too, so a field that is too new or already removed fails here.
KUBERNETES_VERSIONS = ("1.27", "1.30", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SERVICES_OF = {"bank": {"ingest", "scoring", "dispatch", "exchange", "reporting", "console"}, "partner": {"partner"}}
Documents = list[dict[str, Any]]


@pytest.fixture(scope="module", params=PARTIES)
def party(request: pytest.FixtureRequest) -> tuple[str, Documents]:
    return request.param, render(request.param)


@pytest.fixture(scope="module")
def releases() -> dict[str, Documents]:
    return {name: render(name) for name in PARTIES}


def _of_kind(documents: Documents, kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["labels"].get("app.kubernetes.io/name", document["metadata"]["name"]): document
            for document in documents if document["kind"] == kind}


def _egress_peers(policy: dict[str, Any]) -> list[tuple[str, set[int]]]:
    """(peer as canonical JSON, its TCP/UDP ports) for every egress rule's peers."""
    return [(json.dumps(peer, sort_keys=True), {port["port"] for port in rule["ports"]})
            for rule in policy["spec"]["egress"] for peer in rule["to"]]


def test_chart_lints_clean() -> None:
    for party_name in PARTIES:
        report = lint(str(CHART), party_values(party_name), strict=True, kube_version="v1.30.0")
        assert report["total_charts_linted"] == 1 and not report["errors"], report
        assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]  # warnings and errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(releases: dict[str, Documents], version: str) -> None:
    for documents in releases.values():
        core = [document for document in documents if document["kind"] not in CRD_KINDS]
        assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= {d["kind"] for d in core}
        for document in core:
            kubernetes_validate.validate(document, version, strict=True)


def test_monitoring_resources_validate_against_the_prometheus_operator_crd_schemas(releases: dict[str, Documents]) -> None:
    crds = [document for documents in releases.values() for document in documents if document["kind"] in CRD_KINDS]
    assert sorted(d["kind"] for d in crds) == sorted(sorted(CRD_KINDS) * len(PARTIES))
    broken = json.loads(json.dumps(crds[0]))
    broken["spec"]["not_a_field"] = True  # proves the validator rejects what the CRD does not define
    checked = subprocess.run([str(tools_bin("python")), str(Path(__file__).with_name("crd_validate.py"))],
                             input=json.dumps([*crds, broken]), capture_output=True, text=True, check=True, timeout=120)
    problems = json.loads(checked.stdout)
    assert len(problems) == 1 and "not_a_field" in problems[0], problems


def test_rendered_k8s_folder_is_the_fresh_render(party: tuple[str, Documents]) -> None:
    name, documents = party
    assert (REPO / "k8s" / f"{name}.yaml").read_text() == as_yaml(documents), "run `make k8s` and commit k8s/"


def test_each_party_deploys_only_its_own_services(party: tuple[str, Documents]) -> None:
    name, documents = party
    assert set(_of_kind(documents, "Deployment")) == SERVICES_OF[name]
    for deployment in _of_kind(documents, "Deployment").values():
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CIPHERSTREAM_PARTY"] == name


def test_deployments_are_spread_hardened_probed_and_budgeted(party: tuple[str, Documents]) -> None:
    _, documents = party
    budgets, policies, autoscalers, services = (_of_kind(documents, kind) for kind in
                                                ("PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "Service"))
    for service, deployment in _of_kind(documents, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod = deployment["spec"]["template"]["spec"]
        [spread] = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
        assert spread["whenUnsatisfiable"] == "DoNotSchedule" and spread["labelSelector"]["matchLabels"] == selector
        [anti] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        [container] = pod["containers"]
        assert container["args"] == [f"services.{service}.app", "worker"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"] and not context.get("privileged")
        # The only writable path is the /tmp emptyDir (the image sets HOME and the data dir there).
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert all(path == "/tmp" or mount.get("readOnly") for path, mount in mounts.items())
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and "startupProbe" in container
        assert budgets[service]["spec"]["selector"]["matchLabels"] == selector
        assert budgets[service]["spec"]["maxUnavailable"] == 1
        assert policies[service]["spec"]["podSelector"]["matchLabels"] == selector
        assert services[service]["spec"]["selector"] == selector
        assert deployment["spec"]["replicas"] >= 2 and deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        worker_id = next(e for e in container["env"] if e["name"] == "CIPHERSTREAM_WORKER_ID")
        assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # one transactional id per pod
        hot_standby = service in ("exchange", "partner", "reporting")
        assert (service in autoscalers) != hot_standby
        if not hot_standby:
            scaler = autoscalers[service]["spec"]
            assert scaler["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
            assert scaler["minReplicas"] == deployment["spec"]["replicas"] < scaler["maxReplicas"]
            assert [metric["resource"]["name"] for metric in scaler["metrics"]] == ["cpu"]
        if service in ("exchange", "partner"):
            [keys] = [volume for volume in pod["volumes"] if volume["name"] == "keys"]
            assert keys["secret"]["defaultMode"] == 0o400 and mounts["/keys"]["readOnly"] is True
            assert {"name": "CIPHERSTREAM_KEY_DIR", "value": "/keys"} in container["env"]
        else:
            assert "/keys" not in mounts


def test_network_policies_open_only_the_party_s_own_parts_and_the_exchange(releases: dict[str, Documents]) -> None:
    peers_of: dict[str, set[str]] = {}
    for name, documents in releases.items():
        peers_of[name] = set()
        for service, policy in _of_kind(documents, "NetworkPolicy").items():
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            [scrape] = policy["spec"]["ingress"]
            assert scrape["ports"] == [{"port": 6066, "protocol": "TCP"}]
            peers = _egress_peers(policy)
            ports = set().union(*(p for _, p in peers))
            assert 53 in ports and 4318 in ports  # DNS and the collector, always
            # SQL: registry, campaigns, the console's accounts and audit log; never the partner
            assert (5432 in ports) == (service in ("scoring", "dispatch", "console"))
            callers = {peer.get("namespaceSelector", {}).get("matchLabels", {})
                       .get("kubernetes.io/metadata.name") for peer in scrape["from"]}
            # the operators' ingress: the console's pages and API; the console: reporting's campaign report
            expected = {"console": {"monitoring", "bank-ingress"}, "reporting": {"monitoring", "console"}}
            assert callers == expected.get(service, {"monitoring"})
            assert (6379 in ports) == (service not in ("ingest", "reporting"))  # ingest keeps nothing; reporting keeps a faust table
            namespaces = {json.loads(peer).get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                          for peer, _ in peers}
            # only they reach the shared cluster (scoring: its learner's online windows with the partner)
            assert ("exchange-kafka" in namespaces) == (service in ("exchange", "partner", "scoring"))
            assert all(ns is None or ns.startswith((f"{name}-", "exchange-")) or ns == "observability" for ns in namespaces)
            peers_of[name] |= {peer for peer, _ in peers}
    shared = peers_of["bank"] & peers_of["partner"]
    # What both parties may reach: DNS, the collector and the exchange cluster; never each other's Kafka, Redis or SQL.
    assert {json.loads(peer).get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            for peer in shared} == {None, "observability", "exchange-kafka"}


def test_prometheus_rule_is_the_ops_alert_file_and_its_job_is_the_scraped_one(party: tuple[str, Documents]) -> None:
    _, documents = party
    [rule] = [document for document in documents if document["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(ALERTS_SOURCE.read_text())
    assert ALERTS_IN_CHART.read_text() == ALERTS_SOURCE.read_text(), "run `make k8s` to copy ops/prometheus/alerts.yml"
    [monitor] = [document for document in documents if document["kind"] == "ServiceMonitor"]
    job_label = monitor["spec"]["jobLabel"]
    jobs = {service["metadata"]["labels"][job_label] for service in _of_kind(documents, "Service").values()}
    selected = {job for group in rule["spec"]["groups"] for alert in group["rules"]
                for job in re.findall(r'job="([^"]+)"', alert["expr"])}
    assert selected and selected == jobs == {"cipherstream"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= next(iter(_of_kind(documents, "Service").values()))["metadata"]["labels"].items()


def test_a_new_service_is_one_values_line() -> None:
    line = {"federation": {"enabled": True, "replicas": 2, "hotStandby": True, "cpu": "1", "memory": "1Gi",
                           "needs": ["kafka", "exchange", "redis"], "keys": True, "env": {"CIPHERSTREAM_BATCH_MAX_EVENTS": 200}}}
    documents = render("bank", {"services": line, "env": {"CIPHERSTREAM_HOME_COUNTRY": "HK"}})
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert "federation" in _of_kind(documents, kind), kind
    assert "federation" not in _of_kind(documents, "HorizontalPodAutoscaler")
    container = _of_kind(documents, "Deployment")["federation"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CIPHERSTREAM_BATCH_MAX_EVENTS"] == "200" and env["CIPHERSTREAM_HOME_COUNTRY"] == "HK"
    for document in documents:
        if document["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(document, "1.30", strict=True)


@pytest.mark.parametrize(("extra", "message"), [
    ({"services": {"federation": {"enabled": True, "replicas": 1}}}, "missing properties 'cpu', 'memory', 'needs'"),
    ({"services": {"federation": {"enabled": True, "replicas": 1, "hotStandby": True, "cpu": "1", "memory": "1Gi",
                                  "needs": []}}}, "/services/federation/replicas"),
    ({"services": {"scoring": {"needs": ["kafka", "warehouse"]}}}, 'needs names "warehouse", which is not an entry of egress'),
    ({"image": {"tag": "latest"}}, "/image/tag"),
    ({"env": {"KAFKA_BOOTSTRAP_SERVERS": "x:9092"}}, "invalid propertyName 'KAFKA_BOOTSTRAP_SERVERS'"),  # from the Secret only
    ({"env": {"CIPHERSTREAM_PARTY": "partner"}}, "CIPHERSTREAM_PARTY is set by the chart"),
])
def test_bad_values_are_refused_with_the_key_named(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        render("bank", extra)


def test_autoscalers_scale_on_consumer_lag_when_a_target_is_set() -> None:
    from services.core.metrics import CONSUMER_LAG

    documents = render("bank", {"hpa": {"lagTarget": "5000"}})
    autoscalers = _of_kind(documents, "HorizontalPodAutoscaler")
    assert set(autoscalers) == {"ingest", "scoring", "dispatch", "console"}
    for service, autoscaler in autoscalers.items():
        [cpu, lag] = autoscaler["spec"]["metrics"]
        assert cpu["resource"]["name"] == "cpu"
        # The metric the services export (prometheus-adapter serves it as an external metric), per service.
        assert lag["external"]["metric"] == {"name": CONSUMER_LAG._name, "selector": {"matchLabels": {"service": service}}}
        assert lag["external"]["target"] == {"type": "AverageValue", "averageValue": "5000"}
        kubernetes_validate.validate(autoscaler, "1.30", strict=True)
