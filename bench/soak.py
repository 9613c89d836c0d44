"""Soak: the pipeline (ingest -> scoring -> dispatch) at a steady rate for 10 minutes (--quick: 1),
reporting memory and latency over time: the services' resident memory at the start and the end,
p99 latency from the raw event to its score in the first and the last minute (scores, not offers:
after the first minutes nearly every decision is a suppression, one offer per customer, campaign
and day, and suppressions carry no event time), and the largest consumer lag the
services reported on /metrics. Flat memory and a last-minute p99 like the first-minute one mean
nothing accumulates. A per-10-second series is in the notes.

The series also records the CPU seconds used so far by the services and by the embedded broker and
Redis, so a slowdown can be placed.

Run: `python -m bench.soak [--quick]` (SOAK_MINUTES, SOAK_RATE_PER_S, SOAK_FETCH_MAX_WAIT_MS to change the run).
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import parse_args, process_cpu_s, write_results
from bench.stream import PARTITIONS, fresh_settings, preload, run_services, wait_outputs
from services.core.avro import AvroCodec, SchemaStore
from services.core.kafka import all_topic_names, create_topics
from services.core.messages import CustomerScores
from services.core.runtime import embedded_stack
from services.core.supervisor import ServiceRunner
from services.generator.population import customer_records, event_records, make_population

# The embedded Tansu (0.6.0, memory engine) spends CPU on every fetch in proportion to what a topic
# holds, and it keeps everything: at 500 events/s its CPU reached a full core within a minute and the
# pipeline stalled after ~4 minutes (README, "Known quirks of the embedded broker"). 100 events/s
# keeps 10 minutes inside what it can serve; SOAK_RATE_PER_S sets another rate against a real cluster.
RATE_PER_S = float(os.environ.get("SOAK_RATE_PER_S", 100.0))
# Each idle consumer fetches once per fetch wait, and on Tansu each fetch costs in proportion to
# the topic: a longer wait than the services' 10 ms default keeps the broker's growing cost from
# being what the soak measures (SOAK_FETCH_MAX_WAIT_MS to change).
FETCH_MAX_WAIT_MS = int(os.environ.get("SOAK_FETCH_MAX_WAIT_MS", 50))
SAMPLE_S = 10.0
CUSTOMERS = 5_000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def lag(runner: ServiceRunner) -> float:
    total = 0.0
    for port in runner.ports.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("cipherstream_consumer_lag{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def soak(minutes: float) -> tuple[dict[str, float], dict[str, object]]:
    work_dir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    with embedded_stack(work_dir, environ={}) as stack:
        settings = fresh_settings(stack.env, work_dir).model_copy(update={"fetch_max_wait_ms": FETCH_MAX_WAIT_MS})
        await create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), PARTITIONS)
        population = make_population(CUSTOMERS)
        await preload(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                      list(customer_records(population, int(time.time() * 1000))))
        runner = run_services(settings, work_dir, ["ingest", "scoring", "dispatch"])
        try:
            await wait_outputs(settings, ["customer.profiles"], CUSTOMERS)
            await asyncio.sleep(1.0)
            return await _drive(settings, runner, population, minutes, {m.name: m.process.pid for m in stack.processes})
        finally:
            runner.stop_all()


async def _drive(settings, runner: ServiceRunner, population, minutes: float, stack_pids: dict[str, int]):  # type: ignore[no-untyped-def]
    codec = AvroCodec(SchemaStore(settings.schema_dir))
    duration_s = minutes * 60
    events = event_records(population, int(RATE_PER_S * duration_s) + 1000, seed=31)
    latencies: list[tuple[float, float]] = []  # (seconds since start, ms)
    started = time.monotonic()

    async def collect() -> None:
        consumer = AIOKafkaConsumer(settings.topic("scores"),
                                    bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                    for record in records:
                        scores = codec.decode(record.value, CustomerScores)
                        latencies.append((time.monotonic() - started, record.timestamp - scores.received_at_ms))
        finally:
            await consumer.stop()

    collector = asyncio.create_task(collect())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=1, enable_idempotence=False)
    await producer.start()
    series: list[dict[str, float]] = []
    next_sample = 0.0
    sent = 0
    per_tick = int(RATE_PER_S * 0.02)
    while (elapsed := time.monotonic() - started) < duration_s:
        for _ in range(per_tick):
            key, value = next(events)
            await producer.send(settings.topic("bank.events.raw"), value=value, key=key)
        sent += per_tick
        if elapsed >= next_sample:
            if collector.done():  # a dead reader would look like a stalled pipeline: say why instead
                collector.result()
            series.append({"t_s": round(elapsed, 1), "lag": lag(runner), "scores_seen": len(latencies),
                           "rss_mb": round(sum(rss_mb(m.process.pid) for m in runner.running.values()), 1),
                           # CPU used so far by the services, the broker and Redis: where time goes as it runs
                           "services_cpu_s": round(sum(process_cpu_s(m.process.pid) for m in runner.running.values()), 1)}
                          | {f"{name}_cpu_s": round(process_cpu_s(pid), 1) for name, pid in stack_pids.items()})
            next_sample += SAMPLE_S
        await asyncio.sleep(max(0.0, started + sent / RATE_PER_S - time.monotonic()))
    await producer.stop()
    await asyncio.sleep(3)
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    first = [ms for at, ms in latencies if at < 60]
    last = [ms for at, ms in latencies if at >= duration_s - 60]
    metrics = {
        "minutes": minutes,
        "rss_mb_start": series[1]["rss_mb"] if len(series) > 1 else series[0]["rss_mb"],
        "rss_mb_end": series[-1]["rss_mb"],
        "p99_ms_first_min": round(float(np.percentile(first, 99)), 1),
        "p99_ms_last_min": round(float(np.percentile(last, 99)), 1),
        "max_lag": max(sample["lag"] for sample in series),
    }
    return metrics, {"rate_per_s": RATE_PER_S, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS, "scores_seen": len(latencies), "events_sent": sent, "series": series}


def main() -> None:
    quick = parse_args(__doc__ or "").quick
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", "0.01")
    minutes = float(os.environ.get("SOAK_MINUTES", 1.0 if quick else 10.0))  # SOAK_MINUTES: a longer or shorter run
    metrics, notes = asyncio.run(soak(minutes))
    write_results("soak", metrics, notes=notes)


if __name__ == "__main__":
    main()
