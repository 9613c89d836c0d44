"""What the suite (and bench/) reads while it waits (services/core/waiting.py does the waiting):
a topic's log end, a service's /metrics and /readyz."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.clients import partitions_of


async def log_end(bootstrap_servers: str, topic: str) -> int:
    """A topic's log end offsets, summed over its partitions: for a topic only plain producers write,
    how many records it has had."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def events_consumed(port: int, topic: str) -> float:
    """How many records of `topic` (its logical name) the service on `port` has consumed, by its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return sum(float(line.rsplit(" ", 1)[1]) for line in response.read().decode().splitlines()
                   if line.startswith("cipherstream_events_in_total{") and f'topic="{topic}"' in line)


def readiness(port: int) -> dict[str, Any]:
    """The service's /readyz answer, ready (200) or not (503: the body says why), or {} if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as refused:
        try:
            return dict(json.loads(refused.read()))
        except ValueError:
            return {}
    except (OSError, ValueError):
        return {}
