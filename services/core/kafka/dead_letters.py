"""Dead letters: what cannot be processed goes to `dlq.<topic>`, whole, with the reason."""
from __future__ import annotations

import logging

from services.core import metrics
from services.core.dead_letter import DeadLetter
from services.core.errors import MessageError
from services.core.kafka.publisher import Publisher
from services.core.kafka.records import Outbound, now_ms
from services.core.logs import facts
from services.core.topic_names import dlq_name

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends what cannot be processed to `dlq.<topic>`, whole, with the reason; counts and logs it."""

    def __init__(self, publisher: Publisher, service: str) -> None:
        self.publisher = publisher
        self.service = service

    async def send(
        self, logical_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
        error: BaseException, reason: str | None = None,
    ) -> None:
        reason = reason or (error.reason if isinstance(error, MessageError) else "unhandled_error")
        dead_letter = DeadLetter(
            topic=logical_topic, partition=partition, offset=offset, key=key, value=value, reason=reason,
            error_type=type(error).__name__, detail=str(error)[:2000], service=self.service, failed_at_ms=now_ms(),
        )
        await self.publisher.send(Outbound(dlq_name(logical_topic), (key or b"").decode("utf-8", "replace"), dead_letter))
        metrics.DEAD_LETTERS.labels(self.service, logical_topic, reason).inc()
        log.warning("dead letter", extra=facts(topic=logical_topic, partition=partition, offset=offset, reason=reason))
