"""Site failover, as the runbook does it, on two embedded sites (each its own broker, Redis and
SQL database).

Site A runs the pipeline; an hourly-style backup is taken (`cipherstream backup`); A decides more
events after it; then site A is lost (every worker killed with SIGKILL, its Redis gone). Failover:
A's topics and committed group offsets are mirrored to B (tests/faults/mirror.py stands in for
MirrorMaker 2 with zero lag), the backup is restored into B's Redis and database
(`cipherstream restore`), and the services start on B with the same release settings. New
traffic then arrives at site B.

Asserted: every event (before the backup, after it, and after the failover) is scored and decided
on site B's topics; the groups resume where A committed (no event scored twice); B never repeats
an offer the backup recorded, and the only offers made twice are ones A made after the backup (the
RPO window: A's contact history after the backup was lost with A's Redis), at most twice each.
Printed (run with -s): the RTO (site A lost -> every service on B ready) and how many offers the
RPO window let through again."""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from demo.generator.population import event_records
from services.core.avro import AvroCodec
from services.core.clients import produce
from services.core.config import Settings
from services.core.embedded.redis import start_redis
from services.core.kafka import stage_group_id
from services.core.runtime import start_broker
from services.core.supervisor import ServiceRunner, settings_env
from services.core.waiting import wait_committed_to_end
from services.protocol.stream_messages import CustomerScores, Offer
from tests.faults.accounting import STAGES, PipelineLedger, expected_event_ids, start_pipeline
from tests.faults.mirror import mirror_group_offsets, mirror_topics

BATCHES = {21: 1000, 22: 500, 23: 1000}  # seed -> events: before the backup, after it, on site B
# What each stage reads (services/<stage>/topics.py): its group's commits must cover all of it.
STAGE_INPUTS = {"ingest": ("bank.events.raw",), "scoring": ("customer.events", "customer.profiles"),
                "dispatch": ("scores", "responses")}


def _site(settings: Settings, servers: str, redis_url: str, database: Path) -> Settings:
    secret = type(settings.redis_url)
    return settings.model_copy(update={"kafka_bootstrap_servers": servers, "redis_url": secret(redis_url),
                                       "database_url": secret(f"sqlite:///{database}")})


def _cli(settings: Settings, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_site_failover_resumes_on_site_b_with_every_event_accounted(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec,
) -> None:
    redis_a, redis_a_url = start_redis(tmp_path / "site-a")
    broker_b, servers_b = start_broker(tmp_path / "site-b")
    redis_b, redis_b_url = start_redis(tmp_path / "site-b")
    site_a = _site(settings, settings.kafka_bootstrap_servers, redis_a_url, tmp_path / "site-a.db")
    site_b = _site(settings, servers_b, redis_b_url, tmp_path / "site-b.db")
    runner_a, runner_b = ServiceRunner(site_a, tmp_path / "logs-a"), ServiceRunner(site_b, tmp_path / "logs-b")
    try:
        population = await start_pipeline(runner_a, 300)
        raw = site_a.topic("bank.events.raw")
        batches = {seed: list(event_records(population, count, seed=seed)) for seed, count in BATCHES.items()}
        expected = {seed: expected_event_ids(events, seed) for seed, events in batches.items()}

        ledger_a = PipelineLedger(site_a, codec)
        await produce(site_a.kafka_bootstrap_servers, raw, batches[21])
        assert expected[21] <= (await ledger_a.wait_accounted(expected[21], timeout_s=120)).decided
        _cli(site_a, "backup", "--to", str(tmp_path / "backup"))  # the last scheduled backup
        await produce(site_a.kafka_bootstrap_servers, raw, batches[22])
        assert expected[22] <= (await ledger_a.wait_accounted(expected[22], timeout_s=120)).decided
        # The last batch's offsets are committed after its outputs are acknowledged: until every stage's
        # group has committed its last input record, so site B resumes after it.
        await wait_committed_to_end(site_a.kafka_bootstrap_servers, {
            stage_group_id(site_a, name): [site_a.topic(topic) for topic in STAGE_INPUTS[name]] for name in STAGES})

        for managed in runner_a.running.values():  # site A is lost
            managed.kill()
        redis_a.kill()
        lost_at = time.monotonic()

        offset_map = await mirror_topics(site_a.kafka_bootstrap_servers, servers_b, topics, settings.topic_partitions)
        groups = await mirror_group_offsets(site_a.kafka_bootstrap_servers, servers_b,
                                            [stage_group_id(settings, name) for name in STAGES], offset_map)
        assert set(groups) == {stage_group_id(settings, name) for name in STAGES}, groups
        mirrored_s = time.monotonic() - lost_at
        _cli(site_b, "restore", "--from", str(tmp_path / "backup"))
        restored_s = time.monotonic() - lost_at
        for name in STAGES:
            runner_b.start(name, wait=False)
        runner_b.wait_all_ready()
        rto_s = time.monotonic() - lost_at

        await produce(servers_b, site_b.topic("bank.events.raw"), batches[23])
        every_event = expected[21] | expected[22] | expected[23]
        outcome = await PipelineLedger(site_b, codec).wait_accounted(every_event, timeout_s=180)
        assert every_event <= outcome.scored, f"{len(every_event - outcome.scored)} events never scored"
        assert every_event <= outcome.decided, f"{len(every_event - outcome.decided)} events never decided"
        scores_per_event = Counter(codec.decode(r.value, CustomerScores).event_id for r in outcome.records
                                   if r.topic == site_b.topic("scores"))
        assert max(scores_per_event.values()) == 1, "site B replayed events site A had committed"
        assert all(managed.process.poll() is None for managed in runner_b.running.values()), "a service crashed on B"

        # An offer's id is its customer, campaign and day. The restored contact history holds every offer A made
        # before the backup, so B never repeats one of those; offers A made after the backup (the RPO window) were
        # lost with A's Redis and may be made again on B, at most once more each.
        event_batch = {event_id: seed for seed, ids in expected.items() for event_id in ids}
        offer_topics = PipelineLedger(site_b, codec).offer_topics
        batches_of: dict[str, list[int]] = {}
        for record in outcome.records:
            if record.topic in offer_topics:
                offer = codec.decode(record.value, Offer)
                batches_of.setdefault(offer.offer_id, []).append(event_batch[offer.event_id])
        assert outcome.offers_per_id, "no offers at all"
        repeated = [sorted(seen) for seen in batches_of.values() if len(seen) > 1]
        assert all(seen == [22, 23] for seen in repeated), f"offers repeated outside the RPO window: {repeated[:5]}"
        print(f"\nsite failover: mirror {mirrored_s:.1f} s, restore {restored_s - mirrored_s:.1f} s, "
              f"RTO {rto_s:.1f} s (site A lost -> every service on B ready); {len(outcome.offers_per_id)} offers, "
              f"{len(repeated)} offers made again on B, all from the RPO window "
              f"({sum(22 in seen for seen in batches_of.values())} offers were made on A after the backup)")
    finally:
        runner_a.stop_all()
        runner_b.stop_all()
        redis_a.stop()
        redis_b.stop()
        broker_b.stop()
