"""checkov, the policy scanner, passes on the rendered manifests and the Dockerfile; every check
it skips is skipped in the chart with a written reason. checkov has many dependencies of its own,
so it lives in .venv-tools (tests/deploy/tools.py makes it on first use), apart from the project's."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.render import REPO
from tests.deploy.tools import tools_bin


@pytest.fixture(scope="module")
def checkov() -> Path:
    return tools_bin("checkov")


def _scan(checkov: Path, *arguments: str) -> list[dict]:  # type: ignore[type-arg]
    completed = subprocess.run([str(checkov), *arguments, "-o", "json", "--compact"], capture_output=True,
                               text=True, cwd=REPO, timeout=600)
    report = json.loads(completed.stdout)
    return report if isinstance(report, list) else [report]


def test_rendered_manifests_pass_with_only_justified_skips(checkov: Path) -> None:
    [report] = _scan(checkov, "-d", "k8s", "--framework", "kubernetes")
    results = report["results"]
    assert results["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert len(results["passed_checks"]) > 100
    assert results["skipped_checks"], "the chart's justified exceptions should show as skipped"
    for skipped in results["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} skipped without a reason"


def test_dockerfile_passes(checkov: Path) -> None:
    [report] = _scan(checkov, "-f", "Dockerfile", "--framework", "dockerfile")
    assert report["results"]["failed_checks"] == [], [c["check_id"] for c in report["results"]["failed_checks"]]
    assert len(report["results"]["passed_checks"]) >= 10 and not report["results"]["skipped_checks"]
