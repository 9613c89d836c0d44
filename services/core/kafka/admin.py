"""Topic administration for the embedded stack (production provisions its topics)."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def create_topics(bootstrap_servers: str, names: Sequence[str], partitions: int, timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet (the embedded broker; production provisions them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker made them first
                await admin.create_topics(wanted)
    finally:
        await admin.close()
