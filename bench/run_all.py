"""`make bench`: run every benchmark in its own process, then print one table of all results."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
SKIP = {"common.py", "run_all.py", "__init__.py"}


def main() -> int:
    extra_args = sys.argv[1:]
    failures = []
    for script in sorted(BENCH_DIR.glob("*.py")):
        if script.name in SKIP:
            continue
        print(f"== bench/{script.name}", flush=True)
        completed = subprocess.run([sys.executable, "-m", f"bench.{script.stem}", *extra_args], cwd=BENCH_DIR.parent)
        if completed.returncode != 0:
            failures.append(script.name)
    table = Table(title="latest results (bench/results/*.json)")
    for column in ("bench", "metric", "value", "when"):
        table.add_column(column)
    for result in sorted((BENCH_DIR / "results").glob("*.json")):
        document = json.loads(result.read_text())
        for metric, value in document["metrics"].items():
            table.add_row(document["bench"], metric, f"{value:,.4g}" if isinstance(value, float) else str(value), document["when"])
    Console().print(table)
    if failures:
        print("failed:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
