"""`cipherstream up` as a user runs it: the embedded parts are the ones the settings name (Apache
Kafka in KRaft mode by default), everything it started is gone when it stops, also when it is
killed with SIGKILL; and what a new user sees: `up`, `generate`, then offers read with a plain
confluent-kafka consumer, scored by models trained before they served."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import fastavro
import numpy as np
import psutil
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from confluent_kafka import Consumer

from services.core.config import REPO_ROOT
from services.models.bank_features import PRODUCTS
from services.models.registry import ModelRegistry
from services.protocol.catalog import CHANNELS, offers_topic


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: none of the suite's broker, Redis or Cipherstream settings."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DATABASE_URL") and not key.startswith("CIPHERSTREAM_")}
    return env | {"CIPHERSTREAM_EMBEDDED_BROKER": "kafka"} | extra


def start_up(work_dir: Path, *options: str, timeout_s: float = 180,
             env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], dict[str, object]]:
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--work-dir", str(work_dir), *options],
                               cwd=REPO_ROOT, env=env or user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("{"):
            return process, json.loads(line)
    process.kill()
    raise AssertionError(f"`cipherstream up` printed no address line: {''.join(seen)[-3000:]}")


async def broker_roles(bootstrap: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        broker_id = str(cluster["brokers"][0]["node_id"])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)])
        entries = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
        return str(entries["process.roles"])
    finally:
        await admin.close()


def descendants(process: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def wait_gone(processes: list[psutil.Process], timeout_s: float = 30) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return alive


def test_up_starts_apache_kafka_in_kraft_mode_and_valkey_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    process, started = start_up(tmp_path, "--no-bootstrap")
    try:
        assert started["embedded_broker"] == "kafka"
        children = descendants(process)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("kafka.Kafka" in command and "java" in command for command in commands), commands
        assert not any("tansu" in command for command in commands), commands
        # A KRaft node: broker and controller in one process, as the quickstart runs it.
        assert asyncio.run(broker_roles(str(started["KAFKA_BOOTSTRAP_SERVERS"]))) == "broker,controller"
        info = redis.Redis.from_url(str(started["REDIS_URL"])).info("server")
        assert "valkey_version" in info or "redis_version" in info
        assert set(started["services"]) >= {"ingest", "scoring", "dispatch", "exchange", "reporting", "partner"}  # type: ignore[arg-type]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert wait_gone(children) == []


def test_everything_up_started_dies_with_it_when_it_is_killed(tmp_path: Path) -> None:
    process, _ = start_up(tmp_path, "--no-bootstrap")
    children = descendants(process)
    assert len(children) >= 8  # broker, Redis, six services
    process.kill()  # SIGKILL: no finally runs in `up`
    process.wait(timeout=30)
    alive = wait_gone(children)
    assert alive == [], [" ".join(child.cmdline()) for child in alive]


def read_offers(bootstrap: str, wanted: int, timeout_s: float) -> list[dict[str, object]]:
    """What a bank channel reads: offers.<channel> with a plain confluent-kafka consumer and fastavro."""
    schema = fastavro.parse_schema(json.loads((REPO_ROOT / "schemas" / "offer.avsc").read_text()))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "a-new-users-channel",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([offers_topic(channel) for channel in CHANNELS])
    offers: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(offers) < wanted and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                offers.append(fastavro.schemaless_reader(io.BytesIO(message.value()[5:]), schema))  # type: ignore[arg-type]
    finally:
        consumer.close()
    return offers


def test_a_new_user_reads_offers_whose_propensities_and_reasons_differ_by_customer_and_product(tmp_path: Path) -> None:
    # Quiet hours off: at some hours of the day they would hold back nearly every offer.
    env = user_env(CIPHERSTREAM_QUIET_HOURS="false")
    process, started = start_up(tmp_path, timeout_s=1200, env=env)
    try:
        assert started["trained"] is True and started["fallback_products"] == []
        generated = subprocess.run(
            [sys.executable, "-m", "services.cli", "generate"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=300, env=env | {"KAFKA_BOOTSTRAP_SERVERS": str(started["KAFKA_BOOTSTRAP_SERVERS"]),
                                    "REDIS_URL": str(started["REDIS_URL"])})
        assert generated.returncode == 0, generated.stdout + generated.stderr
        offers = read_offers(str(started["KAFKA_BOOTSTRAP_SERVERS"]), wanted=300, timeout_s=300)
        assert len(offers) >= 300, f"only {len(offers)} offers"

        by_product: dict[str, list[dict[str, object]]] = defaultdict(list)
        for offer in offers:
            by_product[str(offer["product"])].append(offer)
        assert len(by_product) >= 3, {product: len(found) for product, found in by_product.items()}
        for product, found in by_product.items():
            assert not any("FALLBACK" in str(offer["service_number"]) for offer in found), product
            assert all(len(offer["reasons"]) == 3 and all(reason["contribution"] != 0.0 for reason in offer["reasons"])  # type: ignore[arg-type, attr-defined]
                       for offer in found), product
            if len(found) >= 20:
                propensities = np.array([float(offer["propensity"]) for offer in found])  # type: ignore[arg-type]
                assert len(set(propensities.tolist())) > len(found) // 2, product  # one per customer, not one constant
                assert propensities.max() / propensities.min() > 1.5, (product, propensities)
                assert len({reason["feature"] for offer in found for reason in offer["reasons"]}) >= 3, product  # type: ignore[attr-defined, index]
        medians = {product: float(np.median([float(offer["propensity"]) for offer in found]))  # type: ignore[arg-type]
                   for product, found in by_product.items()}
        assert len({round(median, 4) for median in medians.values()}) == len(medians), medians
        # Offers to aligned customers came from the federated models, the others from the bank-only ones.
        assert any(str(offer["service_number"]).startswith("CS-FEDLR.") for offer in offers)
        assert any(str(offer["service_number"]).startswith("CS-PROPENSITY.") for offer in offers)

        # Every product has a trained bank-only and federated version in the registry up used.
        registry = ModelRegistry(str(started["DATABASE_URL"]))
        for product in PRODUCTS:
            algorithms = {version.algorithm for version in registry.lineage(f"propensity.{product}")}
            assert "river.LogisticRegression(online SGD), trained from history" in algorithms, product
            assert registry.latest(f"fedlr.{product}") is not None, product
            assert registry.lineage(f"propensity.{product}.fallback") == []
        registry.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
