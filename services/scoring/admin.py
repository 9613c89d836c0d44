"""What the CLI, the demo and the tests ask of scoring: whether its learner has learned every
response, and the customer style types it serves now."""
from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.clients import idempotence_available, partitions_of
from services.core.config import Settings
from services.core.waiting import records_ends, wait_until
from services.models.registry import LearnerPosition, ModelRegistry, ModelVersion
from services.models.segmenter import STYLE_MODEL_NAME, StyleType
from services.scoring.learner import learner_id
from services.scoring.topics import RESPONSES


async def wait_learned_to_end(settings: Settings, timeout_s: float = 60.0) -> LearnerPosition:
    """Until the learner's checkpoint covers every record now in `responses` (so a restart learns
    nothing again); returns that position."""
    topic = settings.topic(RESPONSES)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False,
                              isolation_level="read_committed" if idempotence_available() else "read_uncommitted")
    registry = ModelRegistry(settings.database_url.get_secret_value())
    await reader.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in sorted(await partitions_of(reader, topic))]
        reader.assign(partitions)
        ends = {tp.partition: end for tp, end in (await records_ends(reader, partitions)).items()}
        saved: LearnerPosition | None = None

        def covered() -> LearnerPosition | None:
            nonlocal saved
            saved = registry.position(learner_id(settings))
            return saved if saved and all(saved.offsets.get(p, 0) >= end for p, end in ends.items() if end) else None

        return await wait_until(covered, timeout_s,
                                lambda: f"the learner's checkpoint to reach {ends} (at {saved.offsets if saved else None})")
    finally:
        await reader.stop()
        registry.close()



def style_types(settings: Settings) -> tuple[ModelVersion | None, list[StyleType]]:
    """The latest `style_types` version in the registry and the types it records (none before the
    segmenter's first checkpoint)."""
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        latest = registry.latest(STYLE_MODEL_NAME)
    finally:
        registry.close()
    if latest is None:
        return None, []
    return latest[0], [StyleType(**recorded) for recorded in latest[0].parameters.get("style_types", [])]
