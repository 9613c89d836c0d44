"""Stream throughput and latency on the embedded Apache Kafka, every number from the same run.

- raw_passthrough_per_s: a batched aiokafka consume-and-produce loop (the ceiling).
- ingest_per_s, scoring_per_s, dispatch_per_s: each service alone, its input preloaded; the
  rate is outputs / (last output time - first output time), so start-up is not counted; and
  <stage>_cpu_us_per_event, the CPU the stage's worker spent per event meanwhile.
- stage_ratio_min: the slowest stage / raw passthrough (target >= 0.5).
- pipeline_per_s: raw CDC preloaded, all three services running (target >= 10,000/s).
- p99_ms_at_2000: raw events offered at 2,000/s for a while; p99 latency from the raw event
  reaching Kafka to its offer arriving at a read_committed consumer (target <= 50 ms).
- scaleout_2w_ratio: the pipeline with two worker processes per service over one (target >= 1.7);
  scaleout_2w_p99_ms_at_2000 and scaleout_2w_max_lag_at_2000: the latency run with two workers
  per service, below saturation, against max_lag_at_2000 with one.

Also, to read the misses against (same run): p99_ms_at_2000_at_least_once, the latency run with
the stages at-least-once instead of one Kafka transaction per batch; raw_hop_p99_ms_at_2000, one
batched aiokafka consume -> produce -> commit hop at 2,000 events/s (the pipeline has three such
hops); p99_ms_at_2000_first_5s / _last_5s and broker_cores_at_2000_first_5s / _last_5s, the
latency run's first and last 5 s and the CPU the broker used in each; and pipeline_cores_used,
the CPU every process (services, broker, Redis) used per second of the one-worker pipeline run:
at 2 it has no core left for a second worker to use.

Traces are sampled at 1 % as in production (OTEL_TRACES_SAMPLER=parentbased_traceidratio,
OTEL_TRACES_SAMPLER_ARG=0.01), unless the environment says otherwise.

Run: `python -m bench.stream` (or `--quick`).
"""
from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import LiveArrivals, broker_notes, broker_process, consumer_lag, parse_args, process_cpu_s, write_results
from demo.generator.history import campaign_contacts
from demo.generator.population import customer_records, event_records, make_population
from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec, SchemaStore
from services.core.clients import Record, consume, idempotence_available
from services.core.config import Settings, load_settings
from services.core.kafka import create_topics
from services.core.runtime import embedded_stack
from services.core.supervisor import ServiceRunner
from services.models.history import HistoryRow, history_row
from services.models.registry import ModelRegistry
from services.protocol.catalog import CHANNELS, all_topic_names, offers_topic
from services.protocol.stream_messages import Offer
from services.scoring.bootstrap import train_bank_models

PARTITIONS = 4
WINDOW_S = 5.0  # the latency run's first and last seconds, reported apart


def fresh_settings(env: dict[str, str], work_dir: Path) -> Settings:
    """Settings of their own, with every product's bank-only model trained from a generated history
    in their registry: scoring is measured on the models a deployment serves, not on the fallback."""
    prefix = f"b{uuid.uuid4().hex[:6]}."
    settings = load_settings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], redis_url=env["REDIS_URL"],
        database_url=f"sqlite:///{work_dir / (prefix + 'db')}", topic_prefix=prefix, redis_key_prefix=prefix,
        data_dir=work_dir / prefix, topic_partitions=PARTITIONS, log_level="WARNING",
        # Benchmarks measure the pipeline, not the contact policy: allow every decision to be an offer.
        max_offers_per_customer_per_day=1_000_000,
    )
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        train_bank_models(registry, _generated_history(), source="generated")
    finally:
        registry.close()
    return settings


@functools.cache
def _generated_history() -> tuple[HistoryRow, ...]:
    return tuple(history_row(contact) for contact in campaign_contacts(make_population(1000)))


async def preload(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024,
                                enable_idempotence=idempotence_available())
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def rate(records: Sequence[Record]) -> float:
    stamps = sorted(record.timestamp_ms for record in records)
    span_s = max((stamps[-1] - stamps[0]) / 1000, 1e-3)
    return (len(stamps) - 1) / span_s


async def wait_outputs(settings: Settings, topics: Sequence[str], count: int, timeout_s: float = 300) -> list[Record]:
    return await consume(settings.kafka_bootstrap_servers, [settings.topic(topic) for topic in topics],
                         until=lambda got: len(got) >= count, timeout_s=timeout_s)


async def move_batch(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, sink: str, timeout_ms: int, max_records: int) -> int:
    """The raw loop's step: read a batch, produce it all to `sink`, wait for the acks, commit; how many moved."""
    batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    futures = [await producer.send(sink, value=message.value, key=message.key)
               for messages in batches.values() for message in messages]
    await asyncio.gather(*futures)
    if batches:
        await consumer.commit({partition: messages[-1].offset + 1 for partition, messages in batches.items()})
    return len(futures)


async def offer_steadily(producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]],
                         rate_per_s: float) -> None:
    """Send (key, value) records at a steady rate, a 10 ms tick's worth at a time, as live traffic arrives."""
    per_tick = max(1, int(rate_per_s * 0.01))
    started = time.monotonic()
    for index in range(0, len(records), per_tick):
        for key, value in records[index:index + per_tick]:
            await producer.send(topic, value=value, key=key)
        await asyncio.sleep(max(0.0, started + (index + per_tick) / rate_per_s - time.monotonic()))
    await producer.flush()


async def raw_passthrough(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> float:
    source, sink = settings.topic("raw.in"), settings.topic("raw.out")
    await create_topics(settings.kafka_bootstrap_servers, [source, sink], PARTITIONS)
    await preload(settings.kafka_bootstrap_servers, source, records)
    consumer = AIOKafkaConsumer(source, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=f"{source}g",
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=10,
                                max_poll_records=2000)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=2,
                                max_batch_size=512 * 1024, enable_idempotence=idempotence_available())
    await consumer.start()
    await producer.start()
    moved = 0
    try:
        while moved < len(records):
            moved += await move_batch(consumer, producer, sink, timeout_ms=100, max_records=2000)
    finally:
        await consumer.stop()
        await producer.stop()
    return rate(await wait_outputs(settings, ["raw.out"], len(records)))


def decisions_topics() -> list[str]:
    return [offers_topic(channel) for channel in CHANNELS] + ["suppressions"]


def run_services(settings: Settings, work_dir: Path, names: Sequence[str], workers: int = 1) -> ServiceRunner:
    runner = ServiceRunner(settings, work_dir / "logs")
    try:
        for name in names:
            for instance in range(workers):
                runner.start(name, instance=f"-{instance}", wait=False)
        runner.wait_all_ready()
    except BaseException:
        runner.stop_all()  # one that failed to start must not leave the others running
        raise
    return runner


async def staged(env: dict[str, str], work_dir: Path, customers: int, events: int) -> dict[str, float]:
    """Each stage alone over a preloaded input; the output of one is the input of the next."""
    settings = fresh_settings(env, work_dir)
    await create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), PARTITIONS)
    population = make_population(customers)
    raw = list(customer_records(population, int(time.time() * 1000))) + list(event_records(population, events))
    await preload(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"), raw)
    results = {}
    for name, outputs, expected in (
        ("ingest", ["customer.events", "customer.profiles"], len(raw)),
        ("scoring", ["scores"], events),
        ("dispatch", decisions_topics(), events),
    ):
        runner = run_services(settings, work_dir, [name])
        try:
            worker = next(iter(runner.running.values())).process.pid
            cpu_before = process_cpu_s(worker)
            results[f"{name}_per_s"] = rate(await wait_outputs(settings, outputs, expected))
            # What one event costs this stage, start-up excluded: what a core per worker buys.
            results[f"{name}_cpu_us_per_event"] = (process_cpu_s(worker) - cpu_before) / expected * 1e6
        finally:
            runner.stop_all()
    return results


async def pipeline(env: dict[str, str], work_dir: Path, customers: int, events: int, workers: int,
                   stack_pids: Sequence[int]) -> tuple[float, float]:
    """Events per second through the pipeline, and the CPU cores all its processes used meanwhile."""
    settings = fresh_settings(env, work_dir)
    await create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), PARTITIONS)
    population = make_population(customers)
    await preload(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  list(customer_records(population, int(time.time() * 1000))) + list(event_records(population, events)))
    runner = run_services(settings, work_dir, ["ingest", "scoring", "dispatch"], workers)
    try:
        pids = [*stack_pids, *(managed.process.pid for managed in runner.running.values())]
        cpu_before, started = sum(map(process_cpu_s, pids)), time.monotonic()
        decisions = await wait_outputs(settings, decisions_topics(), events)
        cores = (sum(map(process_cpu_s, pids)) - cpu_before) / (time.monotonic() - started)
        return rate(decisions), cores
    finally:
        runner.stop_all()


async def raw_hop_latency(settings: Settings, rate_per_s: float, duration_s: float) -> float:
    """p99 ms of one batched aiokafka consume -> produce -> commit hop, events offered at a steady rate
    (the first seconds, while the consumer joins its group, are left out)."""
    source, sink = settings.topic("hop.in"), settings.topic("hop.out")
    await create_topics(settings.kafka_bootstrap_servers, [source, sink], PARTITIONS)
    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"{source}g", auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=settings.fetch_max_wait_ms, max_poll_records=500)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence_available())
    stop = asyncio.Event()

    async def hop() -> None:
        while not stop.is_set():
            await move_batch(consumer, producer, sink, timeout_ms=10, max_records=500)

    await consumer.start()
    await producer.start()
    task = asyncio.create_task(hop())
    try:
        count = int(rate_per_s * duration_s)
        await offer_steadily(producer, source, [(str(index).encode(), b"x" * 300) for index in range(count)], rate_per_s)
        records = await consume(bootstrap, [source, sink], until=lambda got: len(got) >= 2 * count, timeout_s=60)
    finally:
        stop.set()
        await task
        await consumer.stop()
        await producer.stop()
    sent = {record.key: record.timestamp_ms for record in records if record.topic == source}
    settled_from = min(sent.values()) + 5_000
    latencies = [record.timestamp_ms - sent[record.key] for record in records
                 if record.topic == sink and sent.get(record.key, 0) > settled_from]
    return float(np.percentile(latencies, 99))


async def latency_at(env: dict[str, str], work_dir: Path, customers: int, rate_per_s: float, duration_s: float,
                     broker_pid: int, workers: int = 1, exactly_once: bool = True) -> dict[str, float]:
    """Event-to-offer latency with events offered at a steady rate, as a bank channel sees it: from
    the raw event reaching Kafka to its offer arriving at a `read_committed` consumer (an offer in
    an open transaction is not there yet). Also the p99 of the first and last 5 s, the broker's
    cores in each, and the largest consumer lag the services reported while it ran. With
    `exactly_once=False` the stages run at-least-once (no transactions), to show what they cost."""
    settings = fresh_settings(env, work_dir).model_copy(update={"exactly_once": exactly_once})
    await create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), PARTITIONS)
    population = make_population(customers)
    await preload(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  list(customer_records(population, int(time.time() * 1000))))
    runner = run_services(settings, work_dir, ["ingest", "scoring", "dispatch"], workers)
    try:
        await wait_outputs(settings, ["customer.profiles"], customers)
        # Scoring has stored them: the timed events meet their profiles, as live traffic does.
        await wait_profiles_stored(settings, [customer.customer_id for customer in population], timeout_s=120)
        count = int(rate_per_s * duration_s)
        events = list(event_records(population, count, seed=99))
        window = int(rate_per_s * WINDOW_S)
        codec = AvroCodec(SchemaStore(settings.schema_dir))
        offer_topics = [settings.topic(topic) for topic in decisions_topics()[:-1]]
        arrivals = LiveArrivals(settings.kafka_bootstrap_servers, offer_topics,
                                lambda value: codec.decode(value, Offer).received_at_ms)
        await arrivals.start()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=1, enable_idempotence=idempotence_available())
        await producer.start()
        broker_cores: list[float] = []
        max_lag = 0.0
        try:
            for part in (events[:window], events[window:-window], events[-window:]):
                if not part:
                    continue
                cpu_before, started = process_cpu_s(broker_pid), time.monotonic()
                await offer_steadily(producer, settings.topic("bank.events.raw"), part, rate_per_s)
                broker_cores.append((process_cpu_s(broker_pid) - cpu_before) / (time.monotonic() - started))
                max_lag = max(max_lag, consumer_lag(runner))
        finally:
            await producer.stop()
        decided = await wait_outputs(settings, decisions_topics(), count)
        offered = sum(1 for record in decided if record.topic in offer_topics)
        offers = await arrivals.wait_for(offered)
        first_ms, last_ms = offers[0][0] + WINDOW_S * 1000, offers[-1][0] - WINDOW_S * 1000
        return {
            "p99_ms_at_2000": float(np.percentile([latency for _, latency in offers], 99)),
            "p99_ms_at_2000_first_5s": float(np.percentile([latency for at, latency in offers if at < first_ms], 99)),
            "p99_ms_at_2000_last_5s": float(np.percentile([latency for at, latency in offers if at > last_ms], 99)),
            "broker_cores_at_2000_first_5s": broker_cores[0],
            "broker_cores_at_2000_last_5s": broker_cores[-1],
            "max_lag_at_2000": max_lag,
        }
    finally:
        runner.stop_all()


async def main_async(quick: bool) -> tuple[dict[str, float], dict[str, str]]:
    customers, events = (2_000, 20_000) if quick else (10_000, 100_000)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    with embedded_stack(work_dir, environ={}) as stack:
        env = stack.env
        raw_records = [(str(index).encode(), b"x" * 300) for index in range(events)]
        metrics: dict[str, float] = {"raw_passthrough_per_s": await raw_passthrough(fresh_settings(env, work_dir), raw_records)}
        metrics |= await staged(env, work_dir, customers, events)
        metrics["stage_ratio_min"] = min(metrics[f"{name}_per_s"] for name in ("ingest", "scoring", "dispatch")) / metrics["raw_passthrough_per_s"]
        stack_pids = [managed.process.pid for managed in stack.processes]
        one_worker, metrics["pipeline_cores_used"] = await pipeline(env, work_dir, customers, events, 1, stack_pids)
        metrics["pipeline_per_s"] = one_worker
        broker = broker_process(stack)
        latency_s = 10.0 if quick else 15.0
        metrics |= await latency_at(env, work_dir, customers, 2000.0, latency_s, broker)
        metrics["raw_hop_p99_ms_at_2000"] = await raw_hop_latency(fresh_settings(env, work_dir), 2000.0, 8.0 if quick else 15.0)
        # The same run without transactions: what exactly-once costs in latency on this machine.
        at_least_once = await latency_at(env, work_dir, customers, 2000.0, latency_s, broker, exactly_once=False)
        metrics["p99_ms_at_2000_at_least_once"] = at_least_once["p99_ms_at_2000"]
        metrics["broker_cores_at_2000_at_least_once"] = at_least_once["broker_cores_at_2000_last_5s"]
        two_workers, _ = await pipeline(env, work_dir, customers, events, 2, stack_pids)
        metrics["scaleout_2w_ratio"] = two_workers / one_worker
        # Below saturation (2,000/s), two workers per stage against one: latency and lag, not only rate.
        scaled = await latency_at(env, work_dir, customers, 2000.0, latency_s, broker, workers=2)
        metrics["scaleout_2w_p99_ms_at_2000"] = scaled["p99_ms_at_2000"]
        metrics["scaleout_2w_max_lag_at_2000"] = scaled["max_lag_at_2000"]
    return metrics, broker_notes(stack)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", "0.01")
    metrics, notes = asyncio.run(main_async(args.quick))
    write_results("stream", metrics, notes=notes)


if __name__ == "__main__":
    main()
