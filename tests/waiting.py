"""What the suite (and bench/) waits on instead of fixed sleeps: `wait_until` polls a condition
until it holds or a deadline passes, and fails naming what it waited for. The conditions live
here too: a customer's profile in Redis, a consumer group's commits at the end of its inputs, a
service's /metrics and /readyz, a topic's log end. A fixed sleep is either too short on a loaded
machine (a flaky test) or too long everywhere else; a condition is neither."""
from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.clients import idempotence_available, partitions_of
from services.core.config import Settings

T = TypeVar("T")
POLL_S = 0.2


@overload
async def wait_until(predicate: Callable[[], Awaitable[T]], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = ...) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = ...) -> T: ...
async def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = POLL_S) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that; after
    `timeout_s`, raise AssertionError naming `what` (a callable is asked then, so the message can
    say how far things got). An async predicate still running at the deadline is cut off there."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            try:
                value = await asyncio.wait_for(outcome, remaining)
            except TimeoutError:
                break
        else:
            value = outcome
        if value:
            return value
        await asyncio.sleep(max(0.0, min(interval_s, deadline - time.monotonic())))
    raise AssertionError(f"gave up after {timeout_s:g} s waiting for {what() if callable(what) else what}")


async def wait_profiles_stored(settings: Settings, customer_ids: Iterable[str], timeout_s: float = 30.0) -> None:
    """Until scoring has stored every one of these customers' profiles in Redis (the key
    `<prefix>profile:<customer>` Scorer.store_profiles sets), so an event sent next meets its
    profile rather than the unknown one. Reading customer.profiles is not enough: scoring stores
    them some time after ingest has written them."""
    keys = [f"{settings.redis_key_prefix}profile:{customer}" for customer in customer_ids]
    missing = len(keys)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())

    async def stored() -> bool:
        nonlocal missing
        present = 0
        for start in range(0, len(keys), 1000):  # EXISTS counts many keys in one round trip
            present += int(await redis.exists(*keys[start:start + 1000]))
        missing = len(keys) - present
        return missing == 0

    try:
        await wait_until(stored, timeout_s, lambda: f"scoring to store {len(keys)} profiles in Redis ({missing} missing)")
    finally:
        await redis.aclose()


async def wait_committed_to_end(bootstrap_servers: str, inputs: Mapping[str, Sequence[str]], timeout_s: float = 60.0) -> None:
    """Until each consumer group (group -> the topics it reads) has committed past the last record of
    every partition of its topics, as its members commit (offset of the last record + 1): a group
    that starts over from its commits then replays nothing. The end is the last record a reader
    sees, not the log end, which in a transactional topic lies past the commit markers."""
    isolation = "read_committed" if idempotence_available() else "read_uncommitted"
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                              isolation_level=isolation)
    # Committed offsets read as a member of the group reads them (no subscription: it never joins),
    # which works on both embedded brokers (tests/faults/mirror.py says why not the admin client).
    groups = {group: AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
              for group in inputs}
    behind: dict[str, dict[str, tuple[int | None, int]]] = {}
    await reader.start()
    try:
        for consumer in groups.values():
            await consumer.start()
        partitions = {topic: [TopicPartition(topic, p) for p in sorted(await partitions_of(reader, topic))]
                      for topic in {topic for topics in inputs.values() for topic in topics}}
        reader.assign([tp for tps in partitions.values() for tp in tps])

        async def caught_up() -> bool:
            ends = await records_ends(reader, list(reader.assignment()))
            behind.clear()
            for group, topics in inputs.items():
                for tp in (tp for topic in topics for tp in partitions[topic]):
                    committed = await groups[group].committed(tp)
                    if (committed or 0) < ends[tp]:
                        behind.setdefault(group, {})[f"{tp.topic}[{tp.partition}]"] = (committed, ends[tp])
            return not behind

        await wait_until(caught_up, timeout_s,
                         lambda: f"the groups to commit their last records (committed, end): {behind}", interval_s=0.5)
    finally:
        for consumer in groups.values():
            await consumer.stop()
        await reader.stop()


async def records_ends(reader: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Per partition (assigned to `reader`): the offset after the last record it can read, found by
    reading back from the end, further each time a stretch holds only markers or aborted records."""
    begins, ends = await reader.beginning_offsets(partitions), await reader.end_offsets(partitions)
    result: dict[TopicPartition, int] = {}
    for tp in partitions:
        result[tp] = begins[tp]  # nothing readable: nothing to commit
        lookback = 8
        while True:
            start = max(begins[tp], ends[tp] - lookback)
            reader.seek(tp, start)
            last: int | None = None
            while await reader.position(tp) < ends[tp]:
                for record in (await reader.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.offset < ends[tp]:
                        last = record.offset
            if last is not None:
                result[tp] = last + 1
                break
            if start == begins[tp]:
                break
            lookback *= 8
    return result


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
