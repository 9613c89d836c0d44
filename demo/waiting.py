"""Waiting for what the demo needs to have happened, with a deadline and an error that says what
did not happen, instead of sleeping for a guessed time."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.core.clients import partitions_of
from services.core.errors import CipherstreamError

POLL_S = 0.2


class WaitTimeout(CipherstreamError):
    """What the demo waited for did not happen within its time limit."""


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str | Callable[[], str],
                     poll_s: float = POLL_S) -> float:
    """Check `condition` every `poll_s` until it holds and return the seconds that took; past
    `timeout_s`, raise WaitTimeout naming `what` (a callable is asked then, so it can say how far it got).

    >>> async def ready() -> bool:
    ...     return True
    >>> asyncio.run(wait_until(ready, timeout_s=1.0, what="ready")) < 1.0
    True
    >>> async def never() -> bool:
    ...     return False
    >>> asyncio.run(wait_until(never, timeout_s=0.05, what=lambda: "the impossible (0 of 1)", poll_s=0.01))
    Traceback (most recent call last):
    ...
    demo.waiting.WaitTimeout: waited 0.05 s for the impossible (0 of 1)
    """
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started >= timeout_s:
            raise WaitTimeout(f"waited {timeout_s:g} s for {what() if callable(what) else what}")
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


async def wait_for_groups(bootstrap_servers: str, topic: str, group_ids: Sequence[str], timeout_s: float) -> float:
    """Wait until each consumer group has committed, on every partition of `topic`, the log end as
    it is now: everything sent to the topic before the call has been processed by every group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in sorted(await partitions_of(consumer, topic))]
        log_end = await consumer.end_offsets(partitions)
        behind = {group_id: sum(log_end.values()) for group_id in group_ids}

        async def caught_up() -> bool:
            for group_id in group_ids:
                committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
                # -1: nothing committed yet on that partition.
                behind[group_id] = sum(log_end[partition] - max(0, committed[partition].offset)
                                       if partition in committed else log_end[partition] for partition in partitions)
            return all(records <= 0 for records in behind.values())

        return await wait_until(caught_up, timeout_s, lambda: f"the groups to consume {topic} to its end "
                                f"(records behind: {behind})")
    finally:
        await consumer.stop()
        await admin.close()
