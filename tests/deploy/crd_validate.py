"""Validate Prometheus operator resources (ServiceMonitor, PrometheusRule) against models generated
from the operator's CRD schemas (cloudcoil.models.prometheus_operator, pinned in
tools-requirements.txt). Runs inside .venv-tools, not the project's venv: reads a JSON list of
manifests on stdin, prints a JSON list of problems (empty: all valid).

The models ignore fields they do not know, so a manifest must also survive a round trip through
its model unchanged: a misspelt or unknown field shows up as a difference.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from cloudcoil.models.prometheus_operator import v1
from pydantic import BaseModel, ValidationError

MODELS: dict[str, type[BaseModel]] = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}


def _differences(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        return [problem for key, value in given.items()
                for problem in (_differences(value, kept[key], f"{path}.{key}") if key in kept
                                else [f"{path}.{key}: not a field of the CRD schema"])]
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        return [problem for index, (a, b) in enumerate(zip(given, kept)) for problem in _differences(a, b, f"{path}[{index}]")]
    return [] if given == kept else [f"{path}: {given!r} read back as {kept!r}"]


def problems_of(manifest: dict[str, Any]) -> list[str]:
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    model = MODELS.get(manifest.get("kind", ""))
    if model is None or manifest.get("apiVersion") != "monitoring.coreos.com/v1":
        return [f"{name}: no CRD schema for {manifest.get('apiVersion')} {manifest.get('kind')}"]
    try:
        parsed = model.model_validate(manifest)
    except ValidationError as error:
        return [f"{name}: {error}"]
    kept = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [f"{name}: {problem}" for problem in _differences(manifest, kept, "")]


def main() -> None:
    manifests = json.load(sys.stdin)
    json.dump([problem for manifest in manifests for problem in problems_of(manifest)], sys.stdout)


if __name__ == "__main__":
    main()
