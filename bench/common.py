"""Shared plumbing for benchmarks: argument parsing, the results file, the printed table.

Every benchmark writes bench/results/<name>.json in the shape BENCHMARKS.md fixes:
{"bench": name, "when": ISO 8601, "machine": {...}, "metrics": {...}}.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from services.core.waiting import wait_until

if TYPE_CHECKING:
    from services.core.runtime import EmbeddedStack
    from services.core.supervisor import ServiceRunner

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
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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


def broker_process(stack: EmbeddedStack) -> int:
    """The pid of the embedded broker the stack started (Apache Kafka, or Tansu)."""
    return next(managed.process.pid for managed in stack.processes if managed.name in ("kafka", "tansu"))


def broker_notes(stack: EmbeddedStack) -> dict[str, str]:
    """Which broker the numbers were measured on (BENCHMARKS.md: notes `broker` and its version)."""
    from services.core.embedded.kafka import KAFKA_VERSION

    kind = stack.broker_kind or "external"
    version = {"kafka": f"Apache Kafka {KAFKA_VERSION} (KRaft, single node)", "tansu": "Tansu 0.6.0 (memory)"}
    return {"broker": kind, "broker_version": version.get(kind, "as KAFKA_BOOTSTRAP_SERVERS names")}


def consumer_lag(runner: ServiceRunner) -> float:
    """The consumer lag every running service reports now (its /metrics), summed."""
    total = 0.0
    for port in runner.ports.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("cipherstream_consumer_lag{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


class LiveArrivals:
    """A `read_committed` reader, as a bank channel runs one, that notes when each record arrives:
    (the event's time, ms from the event reaching Kafka to the record arriving here)."""

    def __init__(self, bootstrap: str, topics: Sequence[str], event_ms: Callable[[bytes], int]) -> None:
        self.consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                         enable_auto_commit=False, group_id=None, fetch_max_wait_ms=5,
                                         isolation_level="read_committed")
        self.event_ms = event_ms
        self.arrivals: list[tuple[int, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # Without a group, every partition is assigned once metadata arrives: soon, but not never.
        await wait_until(self.consumer.assignment, 30, "the live reader's partitions to be assigned", interval_s=0.05)
        await self.consumer.seek_to_end()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100, max_records=5000)).values():
                now_ms = time.time_ns() // 1_000_000
                for record in records:
                    at_ms = self.event_ms(record.value)
                    self.arrivals.append((at_ms, now_ms - at_ms))

    async def wait_for(self, count: int, timeout_s: float = 120) -> list[tuple[int, int]]:
        """Once `count` records arrived (or the timeout), stop and return them sorted by event time."""
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count and time.monotonic() < deadline:
            self.raise_if_dead()
            await asyncio.sleep(0.1)
        await self.stop()
        return sorted(self.arrivals)

    def raise_if_dead(self) -> None:
        """A reader that died would look like a stalled pipeline: say why instead."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
