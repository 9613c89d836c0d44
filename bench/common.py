"""Shared plumbing for benchmarks: argument parsing, the results file, the printed table.

Every benchmark writes bench/results/<name>.json in the shape BENCHMARKS.md fixes:
{"bench": name, "when": ISO 8601, "machine": {...}, "metrics": {...}}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fate"


def parse_args(description: str) -> argparse.Namespace:
    """The flags every benchmark takes: --quick for a smaller run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller run, for a smoke check")
    return parser.parse_args()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, metrics: dict[str, float | int], notes: dict[str, Any] | None = None) -> Path:
    """Write bench/results/<name>.json and print the metrics as a table."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "bench": name,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "metrics": metrics,
    }
    if notes:
        document["notes"] = notes
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print_table(name, metrics)
    return path


def print_table(name: str, metrics: dict[str, float | int]) -> None:
    table = Table(title=f"bench: {name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in metrics.items():
        table.add_row(metric, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)
