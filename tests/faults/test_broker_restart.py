"""The broker goes away mid-stream and comes back on the same address with its data (the embedded
Apache Kafka keeps its log directory across the restart): every service notices (readiness 503,
no crash), reconnects by itself, events flow end to end again, and what was decided before the
restart is still there. The recovery time is printed (run with -s)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from demo.waiting import wait_profiles_stored
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.kafka import create_topics
from services.core.runtime import start_broker
from services.core.supervisor import ServiceRunner
from services.core.waiting import wait_until
from services.protocol.catalog import CHANNELS, all_topic_names, offers_topic
from tests.samples import customer_row, transaction_row


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(json.loads(response.read())["ready"])
    except (urllib.error.URLError, OSError):
        return False


async def _offer_for(settings: Settings, customer: str, txn: str) -> float:
    """Send a customer and, once scoring has stored its profile, a salary credit; seconds until its
    decision (offer or suppression) is out. Either proves the event crossed all three services."""
    raw = settings.topic("bank.events.raw")
    started = time.monotonic()
    await produce(settings.kafka_bootstrap_servers, raw, [(customer.encode(), customer_row(customer, "affluent", "push"))])
    await wait_profiles_stored(settings, [customer], timeout_s=120)  # as long as the decision may take
    await produce(settings.kafka_bootstrap_servers, raw, [(customer.encode(), transaction_row(txn, customer, "salary", "30000.00"))])
    decisions = await consume(settings.kafka_bootstrap_servers,
                              [settings.topic(offers_topic(c)) for c in CHANNELS] + [settings.topic("suppressions")],
                              until=lambda got: any(r.key == customer.encode() for r in got), timeout_s=120)
    assert any(record.key == customer.encode() for record in decisions), f"no decision for {customer}"
    return time.monotonic() - started


async def test_services_ride_out_a_broker_restart(settings: Settings, tmp_path: Path) -> None:
    broker, servers = start_broker(tmp_path / "broker")
    port = int(servers.rsplit(":", 1)[1])
    settings = settings.model_copy(update={"kafka_bootstrap_servers": servers})
    await create_topics(servers, all_topic_names(settings), settings.topic_partitions)
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        for name in ("ingest", "scoring", "dispatch"):
            runner.start(name, wait=False)
        runner.wait_all_ready()
        await _offer_for(settings, "R1", "r1")

        broker.stop()
        down_at = time.monotonic()
        # Until every service has noticed (its readiness probe says 503), however long that takes here.
        await wait_until(lambda: not any(_ready(runner.ports[name]) for name in runner.running), 60,
                         "every service to report not ready without a broker")
        assert all(managed.process.poll() is None for managed in runner.running.values()), "a service crashed"
        assert not any(_ready(runner.ports[name]) for name in runner.running), "a service claims ready without a broker"

        broker, _ = start_broker(tmp_path / "broker", port=port)
        down_s = time.monotonic() - down_at
        deadline = time.monotonic() + 90
        while not all(_ready(runner.ports[name]) for name in runner.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert all(_ready(runner.ports[name]) for name in runner.running), "services did not become ready again"
        assert all(managed.process.poll() is None for managed in runner.running.values())
        end_to_end_s = await _offer_for(settings, "R2", "r2")
        before = await consume(servers, [settings.topic(offers_topic(c)) for c in CHANNELS] + [settings.topic("suppressions")],
                               until=lambda got: any(r.key == b"R1" for r in got), timeout_s=20)
        assert any(record.key == b"R1" for record in before), "the decision made before the restart is gone"
        print(f"broker restart: services ready {time.monotonic() - down_at - end_to_end_s:.1f} s after the broker went "
              f"down ({down_s:.1f} s of it down); first offer after the restart in {end_to_end_s:.1f} s")
    finally:
        runner.stop_all()
        broker.stop()
