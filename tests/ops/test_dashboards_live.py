"""Every dashboard panel's query, and every alert rule, evaluated by a real Prometheus scraping a
live run of both parties (the demo: PSI, federated training, events, offers, responses, malformed
input). Each panel must return data. Prometheus and promtool come from Debian's `prometheus`
package (`make test` installs it when missing)."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from demo.driver import run_demo
from services.core.embedded.processes import free_port, start_process, wait_for_port
from services.core.supervisor import ServiceRunner
from services.core.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SCRAPES_AFTER_TRAFFIC = 4  # every target scraped this many more times once the traffic is over


def _panel_queries() -> list[tuple[str, str]]:
    queries = []
    for path in sorted((REPO / "ops" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries += [(f"{path.stem}: {panel['title']}", target["expr"]) for target in panel["targets"]]
    return queries


def _scrapes(port: int) -> dict[str, int]:
    """Per scraped target (instance): how many scrapes Prometheus has stored, one `up` sample each."""
    result = _query(port, 'count_over_time(up{job="cipherstream"}[1h])')["data"]["result"]
    return {series["metric"]["instance"]: int(float(series["value"][1])) for series in result}


def _query(port: int, expression: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_alert_rules_pass_promtool() -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", str(REPO / "ops" / "prometheus" / "alerts.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_panel_returns_data_from_a_live_run(tmp_path: Path) -> None:
    port = free_port()
    results: dict[str, Any] = {}
    rules = yaml.safe_load((REPO / "ops" / "prometheus" / "alerts.yml").read_text())
    managed = []
    targets: list[str] = []

    def start_prometheus(runner: ServiceRunner) -> None:
        targets.extend(f"127.0.0.1:{p}" for p in runner.ports.values())
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(REPO / "ops" / "prometheus" / "alerts.yml")],
                  "scrape_configs": [{"job_name": "cipherstream", "static_configs": [{"targets": targets}]}]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        managed.append(start_process("prometheus", [
            PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "logs"))
        wait_for_port("127.0.0.1", port, process=managed[0].process)

    def evaluate(runner: ServiceRunner) -> None:
        # The last traffic's counts must be in Prometheus: a few more scrapes of every target from now.
        now = _scrapes(port)
        wanted = {target: now.get(target, 0) + SCRAPES_AFTER_TRAFFIC for target in targets}
        seen: dict[str, int] = {}

        def scraped() -> bool:
            seen.update(_scrapes(port))
            return all(seen.get(target, 0) >= count for target, count in wanted.items())

        asyncio.run(wait_until(scraped, 60, lambda: f"Prometheus to scrape every target {SCRAPES_AFTER_TRAFFIC} more "
                                                    f"times (scrapes wanted: {wanted}, stored: {seen})"))
        for title, expression in _panel_queries():
            results[title] = _query(port, expression)
        for group in rules["groups"]:
            for rule in group["rules"]:
                results[f"alert {rule['alert']}"] = _query(port, rule["expr"])

    try:
        summary = run_demo(tmp_path / "demo", customers=300, events=900, malformed=12, rate_per_s=150, timeout_s=120,
                           quiet_hours=False, on_ready=start_prometheus, before_stop=evaluate)
    finally:
        for process in managed:
            process.stop()
    assert summary.complete
    assert all(result["status"] == "success" for result in results.values()), \
        {title: result for title, result in results.items() if result["status"] != "success"}
    empty = [title for title, result in results.items() if not title.startswith("alert ") and not result["data"]["result"]]
    assert not empty, f"panels without data: {empty}"
