"""Scale out: a second worker of a stage joins its consumer group; partitions spread over both,
both do work, and every event is still scored exactly once downstream of the shared group."""
from __future__ import annotations

import time
from pathlib import Path

from demo.generator.population import customer_records, event_records, make_population
from demo.waiting import wait_profiles_stored
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.supervisor import ServiceRunner
from tests.waiting import events_consumed


async def test_two_scoring_workers_share_the_partitions(settings: Settings, topics: list[str], tmp_path: Path) -> None:
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        runner.start("ingest", wait=False)
        runner.start("scoring", instance="-a", wait=False)
        runner.wait_all_ready()
        runner.start("scoring", instance="-b")  # scale out: the group rebalances over both
        population = make_population(200)
        raw = settings.topic("bank.events.raw")
        await produce(settings.kafka_bootstrap_servers, raw, customer_records(population, int(time.time() * 1000)))
        # Every profile stored (by whichever worker owns its partition) before the events that need it.
        await wait_profiles_stored(settings, [customer.customer_id for customer in population])
        events = list(event_records(population, 2000, seed=8))
        await produce(settings.kafka_bootstrap_servers, raw, events)
        scores = await consume(settings.kafka_bootstrap_servers, [settings.topic("scores")],
                               until=lambda got: len(got) >= len(events), timeout_s=60, idle_s=5)
        assert len(scores) == len(events)  # every event scored once: no partition read by both
        per_worker = [events_consumed(runner.ports[name], "customer.events") for name in ("scoring-a", "scoring-b")]
        assert all(count > 0 for count in per_worker) and sum(per_worker) == len(events), per_worker
    finally:
        runner.stop_all()
