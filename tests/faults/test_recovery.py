"""Faults on the real embedded parts: workers killed with SIGKILL mid-stream, Redis stopped while
1,000 events arrive, events delivered twice. After recovery, read as a `read_committed` bank
channel reads: every event is accounted for, no offer is lost or sent twice, and (Kafka
transactions) every event that arrived once was scored and decided exactly once. Recovery times
are printed (run with -s to see them)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from demo.generator.population import event_records
from services.core.avro import AvroCodec
from services.core.clients import produce
from services.core.config import Settings
from services.core.embedded.redis import start_redis
from services.core.supervisor import ServiceRunner, wait_ready
from services.core.waiting import wait_until
from tests.faults.accounting import PipelineLedger, expected_event_ids, send_steadily, start_pipeline
from tests.waiting import events_consumed, log_end, readiness

EVENTS = 9000
RATE_PER_S = 100.0
STREAM_INPUT = {"ingest": "bank.events.raw", "scoring": "customer.events", "dispatch": "scores"}  # per stage
MID_STREAM_EVENTS = 200  # a worker is killed once it has consumed this many more events: mid-stream
OUTAGE_BACKLOG = 1000  # events that arrive while Redis is stopped: the backlog to recover from


async def test_kills_redis_outage_and_duplicates_lose_nothing_and_send_nothing_twice(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec,
) -> None:
    redis_process, redis_url = start_redis(tmp_path / "redis")
    settings = settings.model_copy(update={"redis_url": type(settings.redis_url)(redis_url),
                                           "max_offers_per_customer_per_day": 1000})
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        population = await start_pipeline(runner, 300)
        raw = settings.topic("bank.events.raw")
        events = list(event_records(population, EVENTS, seed=5))
        sender = asyncio.create_task(send_steadily(settings.kafka_bootstrap_servers, raw, events, RATE_PER_S))
        recovery_s: dict[str, float] = {}
        for name in ("ingest", "scoring", "dispatch"):
            await _consumes_more(runner, name, MID_STREAM_EVENTS)
            # In a thread, so events keep arriving while the worker is down and its replacement starts.
            recovery_s[name] = await asyncio.to_thread(_kill_and_restart, runner, name)
        redis_process.process.send_signal(signal.SIGSTOP)  # Redis stops answering
        stopped_at = time.monotonic()
        await _outage_felt(runner, settings.kafka_bootstrap_servers, raw, OUTAGE_BACKLOG)
        redis_process.process.send_signal(signal.SIGCONT)
        outage_ended = time.monotonic()
        recovery_s["redis_stopped"] = round(outage_ended - stopped_at, 2)  # no longer a fixed 10 s: printed
        await sender
        await produce(settings.kafka_bootstrap_servers, raw, events[:200])  # delivered twice

        expected = expected_event_ids(events, 5)
        outcome = await PipelineLedger(settings, codec).wait_accounted(expected, timeout_s=180)
        recovery_s["redis_outage_backlog"] = time.monotonic() - outage_ended
        assert expected <= outcome.scored and expected <= outcome.decided, "some events were never scored or decided"
        assert outcome.offers_per_id and not outcome.sent_twice(), f"offers sent twice: {outcome.sent_twice()[:5]}"
        if settings.exactly_once:
            # Kafka transactions, read committed: despite the kills and the outage, every event that
            # arrived once was scored once and decided once (the 200 sent twice are scored twice and
            # their second decision is a `duplicate_event` suppression).
            arrived_once = expected - expected_event_ids(events[:200], 5)
            twice = outcome.not_exactly_once(arrived_once)
            assert not twice, (f"{len(twice)} events not exactly once, e.g. "
                               f"{[(e, outcome.scores_per_event[e], outcome.decisions_per_event[e]) for e in twice[:5]]}")
        assert all(managed.process.poll() is None for key, managed in runner.running.items() if "-r" in key)
        print(f"\nrecovery (s): {recovery_s}")
    finally:
        runner.stop_all()
        if redis_process.process.poll() is None:
            os.kill(redis_process.process.pid, signal.SIGCONT)
        redis_process.stop()


def _current_worker(runner: ServiceRunner, name: str) -> str:
    """The worker of `name` started last: the original, or the replacement of the last kill."""
    return next(key for key in reversed(list(runner.running)) if key.startswith(name))


async def _consumes_more(runner: ServiceRunner, name: str, count: int, timeout_s: float = 60.0) -> None:
    """Until the current worker of `name` has consumed `count` more events of the stream (by its /metrics):
    the stream flows through it (again, after the last kill), so killing it now is mid-stream."""
    port, topic = runner.ports[_current_worker(runner, name)], STREAM_INPUT[name]

    def consumed() -> float:
        try:
            return events_consumed(port, topic)
        except OSError:  # a moment's slow answer under load: ask again
            return 0.0

    start = await asyncio.to_thread(consumed)  # in a thread: the sender keeps its pace meanwhile

    async def grown() -> bool:
        return await asyncio.to_thread(consumed) >= start + count

    await wait_until(grown, timeout_s, f"{name} to consume {count} more events of {topic}")


async def _outage_felt(runner: ServiceRunner, bootstrap_servers: str, raw: str, backlog: int, timeout_s: float = 120.0) -> None:
    """While Redis is stopped: until scoring, its first user in the stream, reports the outage (/readyz:
    degraded, its batches failing and replayed) and `backlog` more events have arrived behind it."""
    port = runner.ports[_current_worker(runner, "scoring")]
    backlog_from = await log_end(bootstrap_servers, raw)
    noticed = False

    async def felt() -> bool:
        nonlocal noticed
        noticed = noticed or bool((await asyncio.to_thread(readiness, port)).get("degraded"))
        return noticed and await log_end(bootstrap_servers, raw) >= backlog_from + backlog

    await wait_until(felt, timeout_s, lambda: f"scoring to report the Redis outage (noticed: {noticed}) "
                                              f"and {backlog} events to arrive during it", interval_s=0.5)


def _kill_and_restart(runner: ServiceRunner, name: str) -> float:
    """SIGKILL the running worker of `name`, start a new one; return seconds until it is ready."""
    victim = _current_worker(runner, name)
    runner.running[victim].kill()
    started = time.monotonic()
    # The replacement takes the killed worker's place (worker id 0, as a restarted pod keeps its
    # name), so its transactional id fences the transaction the killed one left open.
    replacement = runner.start(name, instance=f"-r{len(runner.running)}", wait=False,
                               extra_env={"CIPHERSTREAM_WORKER_ID": "0"})
    wait_ready(runner.ports[replacement.name], replacement, timeout_s=60)
    return round(time.monotonic() - started, 2)

