"""Soak: the pipeline (ingest -> scoring -> dispatch) at 2,000 events/s for 10 minutes (--quick: 1),
on the embedded Apache Kafka, reporting what would show something accumulating:
- the services' resident memory at the start and the end (rss_ratio: end / start, target <= 1.2);
- p99 latency from the raw event reaching Kafka to its score arriving at a `read_committed`
  consumer, in the first and the last minute (p99_ratio: last / first, target <= 1.5). Scores,
  not offers: after the first minutes nearly every decision is a suppression (one offer per
  customer, campaign and day), and suppressions carry no event time;
- the broker's CPU seconds in each minute (flat: broker_cpu_ratio, last full minute / first);
- the largest consumer lag the services reported on /metrics, and the last one (no growing lag).
A per-10-second series is in the notes, with the CPU used so far by the services, the broker and Redis.

Run: `python -m bench.soak [--quick]` (SOAK_MINUTES, SOAK_RATE_PER_S, SOAK_FETCH_MAX_WAIT_MS to change the run).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer

from bench.common import LiveArrivals, broker_notes, broker_process, consumer_lag, parse_args, process_cpu_s, write_results
from bench.stream import PARTITIONS, fresh_settings, preload, run_services, wait_outputs
from demo.generator.population import customer_records, event_records, make_population
from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec, SchemaStore
from services.core.clients import idempotence_available
from services.core.kafka import create_topics
from services.core.runtime import embedded_stack
from services.core.supervisor import ServiceRunner
from services.protocol.catalog import all_topic_names
from services.protocol.stream_messages import CustomerScores

RATE_PER_S = float(os.environ.get("SOAK_RATE_PER_S", 2000.0))
# The services' own default (10 ms) unless SOAK_FETCH_MAX_WAIT_MS says otherwise.
FETCH_MAX_WAIT_MS = int(os.environ.get("SOAK_FETCH_MAX_WAIT_MS", 10))
SAMPLE_S = 10.0
CUSTOMERS = 5_000


def p99(latencies_ms: list[int]) -> float:
    """The 99th percentile, or NaN where nothing arrived (a stalled pipeline still gets a report)."""
    return float(np.percentile(latencies_ms, 99)) if latencies_ms else float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
            # Scoring has stored them: the soak's events meet their profiles from the first one.
            await wait_profiles_stored(settings, [customer.customer_id for customer in population], timeout_s=120)
            metrics, notes = await _drive(settings, runner, population, minutes,
                                          {m.name: m.process.pid for m in stack.processes}, broker_process(stack))
            return metrics, notes | broker_notes(stack)
        finally:
            runner.stop_all()


async def _drive(settings, runner: ServiceRunner, population, minutes: float, stack_pids: dict[str, int],  # type: ignore[no-untyped-def]
                 broker_pid: int):
    codec = AvroCodec(SchemaStore(settings.schema_dir))
    duration_s = minutes * 60
    count = int(RATE_PER_S * duration_s) + 1000
    # The generator spaces events a second apart: start them that long ago, so that none is dated in
    # the future (ingest dead-letters those as implausible; the first 2,000/s soak met them after 5 minutes).
    events = event_records(population, count, seed=31,
                           start=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=count + 60))
    started = time.monotonic()
    started_ms = time.time_ns() // 1_000_000
    arrivals = LiveArrivals(settings.kafka_bootstrap_servers, [settings.topic("scores")],
                            lambda value: codec.decode(value, CustomerScores).received_at_ms)
    await arrivals.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=1, enable_idempotence=idempotence_available())
    await producer.start()
    series: list[dict[str, float]] = []
    broker_cpu_per_min: list[float] = []
    minute_started_cpu = process_cpu_s(broker_pid)
    next_sample, next_minute = 0.0, 60.0
    sent = 0
    per_tick = max(1, int(RATE_PER_S * 0.01))
    while (elapsed := time.monotonic() - started) < duration_s:
        for _ in range(per_tick):
            key, value = next(events)
            await producer.send(settings.topic("bank.events.raw"), value=value, key=key)
        sent += per_tick
        if elapsed >= next_sample:
            arrivals.raise_if_dead()
            series.append({"t_s": round(elapsed, 1), "lag": consumer_lag(runner), "scores_seen": len(arrivals.arrivals),
                           "rss_mb": round(sum(rss_mb(m.process.pid) for m in runner.running.values()), 1),
                           # CPU used so far by the services, the broker and Redis: where time goes as it runs
                           "services_cpu_s": round(sum(process_cpu_s(m.process.pid) for m in runner.running.values()), 1)}
                          | {f"{name}_cpu_s": round(process_cpu_s(pid), 1) for name, pid in stack_pids.items()})
            next_sample += SAMPLE_S
        if elapsed >= next_minute:
            now_cpu = process_cpu_s(broker_pid)
            broker_cpu_per_min.append(round(now_cpu - minute_started_cpu, 2))
            minute_started_cpu, next_minute = now_cpu, next_minute + 60.0
        await asyncio.sleep(max(0.0, started + sent / RATE_PER_S - time.monotonic()))
    await producer.stop()
    # Behind at the end, the last minute's scores arrive late: wait for them (their latency says so).
    latencies = await arrivals.wait_for(sent, timeout_s=180)
    first = [ms for at, ms in latencies if at < started_ms + 60_000]
    last = [ms for at, ms in latencies if at >= started_ms + (duration_s - 60) * 1000]
    rss_start = series[1]["rss_mb"] if len(series) > 1 else series[0]["rss_mb"]
    p99_first, p99_last = p99(first), p99(last)
    metrics = {
        "rate_per_s": RATE_PER_S,
        "minutes": minutes,
        "rss_mb_start": rss_start,
        "rss_mb_end": series[-1]["rss_mb"],
        "rss_ratio": round(series[-1]["rss_mb"] / rss_start, 3),
        "p99_ms_first_min": round(p99_first, 1),
        "p99_ms_last_min": round(p99_last, 1),
        "p99_ratio": round(p99_last / p99_first, 3),
        "broker_cpu_s_first_min": broker_cpu_per_min[0] if broker_cpu_per_min else float("nan"),
        "broker_cpu_s_last_min": broker_cpu_per_min[-1] if broker_cpu_per_min else float("nan"),
        "broker_cpu_ratio": round(broker_cpu_per_min[-1] / broker_cpu_per_min[0], 3) if broker_cpu_per_min else float("nan"),
        "max_lag": max(sample["lag"] for sample in series),
        "last_lag": series[-1]["lag"],
        "scored_fraction": round(len(latencies) / sent, 4),
    }
    return metrics, {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS, "scores_seen": len(latencies), "events_sent": sent,
                     "broker_cpu_s_per_min": broker_cpu_per_min, "series": series}


def main() -> None:
    quick = parse_args(__doc__ or "").quick
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", "0.01")
    minutes = float(os.environ.get("SOAK_MINUTES", 1.0 if quick else 10.0))  # SOAK_MINUTES: a longer or shorter run
    metrics, notes = asyncio.run(soak(minutes))
    write_results("soak", metrics, notes=notes)


if __name__ == "__main__":
    main()
