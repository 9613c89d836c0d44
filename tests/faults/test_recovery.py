"""Faults on the real embedded parts: workers killed with SIGKILL mid-stream, Redis stopped for
10 s, events delivered twice. After recovery every event is accounted for and no offer is
lost or sent twice. Recovery times are printed (run with -s to see them)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.core.avro import AvroCodec
from services.core.catalog import CHANNELS, offers_topic
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.messages import CustomerScores, Offer, Suppression
from services.core.runtime import start_redis
from services.core.supervisor import ServiceRunner, wait_ready
from services.generator.population import customer_records, event_records, make_population

EVENTS = 9000
RATE_PER_S = 100.0


async def test_kills_redis_outage_and_duplicates_lose_nothing_and_send_nothing_twice(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec,
) -> None:
    redis_process, redis_url = start_redis(tmp_path / "redis")
    settings = settings.model_copy(update={"redis_url": type(settings.redis_url)(redis_url),
                                           "max_offers_per_customer_per_day": 1000})
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        for name in ("ingest", "scoring", "dispatch"):
            runner.start(name, wait=False)
        runner.wait_all_ready()
        population = make_population(300)
        raw = settings.topic("bank.events.raw")
        await produce(settings.kafka_bootstrap_servers, raw, customer_records(population, int(time.time() * 1000)))
        await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")],
                      until=lambda got: len(got) >= 300, timeout_s=30)
        await asyncio.sleep(1.0)
        events = list(event_records(population, EVENTS, seed=5))
        sender = asyncio.create_task(_send_steadily(settings, raw, events))
        recovery_s: dict[str, float] = {}
        for name in ("ingest", "scoring", "dispatch"):
            await asyncio.sleep(2)
            # In a thread, so events keep arriving while the worker is down and its replacement starts.
            recovery_s[name] = await asyncio.to_thread(_kill_and_restart, runner, name)
        redis_process.process.send_signal(signal.SIGSTOP)  # Redis stops answering
        await asyncio.sleep(10)
        redis_process.process.send_signal(signal.SIGCONT)
        outage_ended = time.monotonic()
        await sender
        await produce(settings.kafka_bootstrap_servers, raw, events[:200])  # delivered twice

        expected = {f"transactions:T5-{index}" if b'"transactions"' in value else f"logins:L5-{index}"
                    for index, (_, value) in enumerate(events)}
        scores_topic = settings.topic("scores")
        offer_topics = [settings.topic(offers_topic(channel)) for channel in CHANNELS]
        suppressions = settings.topic("suppressions")

        def accounted(records: list) -> bool:  # type: ignore[type-arg]
            scored = {codec.decode(r.value, CustomerScores).event_id for r in records if r.topic == scores_topic}
            decided = {_decided_event(codec, r, suppressions) for r in records if r.topic != scores_topic}
            return expected <= scored and expected <= decided

        records = await consume(settings.kafka_bootstrap_servers, [scores_topic, *offer_topics, suppressions],
                                until=accounted, timeout_s=180)
        recovery_s["redis_outage_backlog"] = time.monotonic() - outage_ended
        assert accounted(records), "some events were never scored or decided"
        offer_ids = Counter(codec.decode(r.value, Offer).offer_id for r in records if r.topic in offer_topics)
        assert offer_ids and max(offer_ids.values()) == 1, f"offers sent twice: {[k for k, v in offer_ids.items() if v > 1][:5]}"
        assert all(managed.process.poll() is None for key, managed in runner.running.items() if "-r" in key)
        print(f"\nrecovery (s): {recovery_s}")
    finally:
        runner.stop_all()
        if redis_process.process.poll() is None:
            os.kill(redis_process.process.pid, signal.SIGCONT)
        redis_process.stop()


def _decided_event(codec: AvroCodec, record, suppressions: str) -> str:  # type: ignore[no-untyped-def]
    if record.topic == suppressions:
        return codec.decode(record.value, Suppression).event_id
    return codec.decode(record.value, Offer).event_id


def _kill_and_restart(runner: ServiceRunner, name: str) -> float:
    """SIGKILL the running worker of `name`, start a new one; return seconds until it is ready."""
    victim = next(key for key in reversed(list(runner.running)) if key.startswith(name))
    runner.running[victim].kill()
    started = time.monotonic()
    replacement = runner.start(name, instance=f"-r{len(runner.running)}", wait=False)
    wait_ready(runner.ports[replacement.name], replacement, timeout_s=60)
    return round(time.monotonic() - started, 2)


async def _send_steadily(settings: Settings, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        started = time.monotonic()
        for index, (key, value) in enumerate(events):
            await producer.send(topic, value=value, key=key)
            await asyncio.sleep(max(0.0, started + index / RATE_PER_S - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
