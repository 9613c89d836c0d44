"""A driver's channel over the exchange topics: the side of a protocol that runs as a loop of its
own rather than as a stream stage (the bank's federated training job, scoring's online learner).

It sends its sessions' messages to the other party and waits for the answer to one of them. The
answer is the other party's message of an expected kind in the same session whose correlation id
is the message it answers, so an answer to an earlier, abandoned attempt is never taken for the
current one. Answers are read as they arrive, from the end of the topic when the channel starts,
without a consumer group (the exchange service's group leaves `fedlr_*` kinds to their driver),
and `read_committed`: what a crashed partner's aborted transaction wrote is never read (a masked
gradient whose masks died with it would decrypt to garbage).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core.avro import AvroCodec
from services.core.clients import partitions_of
from services.core.config import Settings
from services.core.errors import UnreachableError
from services.protocol.exchange import envelope, open_payload, other, topic_to
from services.protocol.exchange_messages import ExchangePayload, Party
from services.protocol.kinds import kind_of
from services.protocol.stream_messages import ExchangeMessage

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class ReplyTimeout(UnreachableError):
    """The other party did not answer in time (it may be down, or it refused the message)."""


class ExchangeChannel:
    """Send as `party`; wait for the other party's answers (`start` before use, `stop` after)."""

    def __init__(self, settings: Settings, codec: AvroCodec, party: Party = "bank") -> None:
        self.settings, self.codec, self.party = settings, codec, party
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.exchange_servers, acks="all",
                                         max_request_size=MAX_MESSAGE_BYTES, enable_idempotence=settings.exactly_once)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.exchange_servers, enable_auto_commit=False,
                                         group_id=None, fetch_max_wait_ms=settings.fetch_max_wait_ms,
                                         max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
                                         isolation_level="read_committed" if settings.exactly_once else "read_uncommitted")

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        topic = self.settings.topic(topic_to(self.party))
        partitions = await partitions_of(self.consumer, topic)
        if not partitions:
            raise UnreachableError(f"topic {topic} does not exist on {self.settings.exchange_servers}")
        assigned = [TopicPartition(topic, partition) for partition in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)  # only answers to what we are about to send

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def send(self, message: ExchangePayload, session_id: str, correlation_id: str = "") -> str:
        """Send one message of a session; returns its message id (what its answer will correlate to)."""
        outbound = envelope(self.codec, message, self.party, session_id, correlation_id)
        await self.producer.send_and_wait(self.settings.topic(outbound.topic), self.codec.encode(outbound.message),
                                          key=outbound.key.encode())
        return str(outbound.message.message_id)

    async def reply(self, session_id: str, answers: Sequence[type[ExchangePayload]], to_message: str,
                    timeout_s: float) -> tuple[Any, str]:
        """The other party's answer to message `to_message` of the session, of one of the `answers`
        types: (payload, its message id). Everything else read meanwhile is passed over."""
        wanted = {kind_of(message_type).name: message_type for message_type in answers}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    message = self.codec.decode(record.value, ExchangeMessage)
                    if (message.session_id == session_id and message.sender == other(self.party)
                            and message.kind in wanted and message.correlation_id == to_message):
                        return open_payload(self.codec, message, wanted[message.kind]), message.message_id
        names = " or ".join(wanted)
        raise ReplyTimeout(f"no {names} from the {other(self.party)} within {timeout_s:.0f} s")
