"""`cipherstream up` as a user runs it: the embedded parts are the ones the settings name (Apache
Kafka in KRaft mode by default), and everything it started is gone when it stops, also when it
is killed with SIGKILL."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.core.config import REPO_ROOT


def start_up(work_dir: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DATABASE_URL") and not key.startswith("CIPHERSTREAM_")}
    env["CIPHERSTREAM_EMBEDDED_BROKER"] = "kafka"
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--work-dir", str(work_dir)],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 180
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
    process, started = start_up(tmp_path)
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
    process, _ = start_up(tmp_path)
    children = descendants(process)
    assert len(children) >= 8  # broker, Redis, six services
    process.kill()  # SIGKILL: no finally runs in `up`
    process.wait(timeout=30)
    alive = wait_gone(children)
    assert alive == [], [" ".join(child.cmdline()) for child in alive]
