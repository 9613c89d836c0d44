"""Waiting on a condition instead of sleeping for a guessed time: `wait_until` polls until the
condition holds or a deadline passes, and fails naming what it waited for (how far it got, if
asked); `wait_committed_to_end` waits for consumer groups to have committed their last input
records. The demo, the tests and the benchmarks all wait this way: a fixed sleep is too short on
a loaded machine and too long everywhere else.

>>> async def never() -> bool:
...     return False
>>> asyncio.run(wait_until(never, timeout_s=0.05, what=lambda: "the impossible (0 of 1)", interval_s=0.01))
Traceback (most recent call last):
...
services.core.waiting.WaitTimeout: gave up after 0.05 s waiting for the impossible (0 of 1)
"""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.clients import idempotence_available, partitions_of
from services.core.errors import CipherstreamError

T = TypeVar("T")
POLL_S = 0.2


class WaitTimeout(CipherstreamError):
    """What was waited for did not happen within its time limit."""


@overload
async def wait_until(predicate: Callable[[], Awaitable[T]], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = ...) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = ...) -> T: ...
async def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str | Callable[[], str],
                     interval_s: float = POLL_S) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that; after
    `timeout_s`, raise WaitTimeout naming `what` (a callable is asked then, so the message can
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
    raise WaitTimeout(f"gave up after {timeout_s:g} s waiting for {what() if callable(what) else what}")


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
