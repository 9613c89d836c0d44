"""Render the Helm chart for each party with Helm's own engine (the helm-python-sdk wheel: no
cluster, no helm binary needed) and write k8s/<party>.yaml for users without Helm.

Run: `python -m tests.deploy.render` (or `make k8s`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_python.chart import Chart

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cipherstream"
PARTIES = ("bank", "partner")


def render(party: str) -> list[dict[str, Any]]:
    values = yaml.safe_load((CHART / f"values-{party}.yaml").read_text())
    with Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name=f"cipherstream-{party}", namespace=f"cipherstream-{party}")
    documents = [document for path in sorted(rendered) for document in yaml.safe_load_all(rendered[path]) if document]
    return sorted(documents, key=lambda document: (document["kind"], document["metadata"]["name"]))


def as_yaml(documents: list[dict[str, Any]]) -> str:
    header = "# Rendered from helm/cipherstream by `make k8s`; do not edit (a test compares it with a fresh render).\n"
    return header + "".join("---\n" + yaml.safe_dump(document, sort_keys=True) for document in documents)


def main() -> None:
    (REPO / "k8s").mkdir(exist_ok=True)
    for party in PARTIES:
        (REPO / "k8s" / f"{party}.yaml").write_text(as_yaml(render(party)))


if __name__ == "__main__":
    main()
