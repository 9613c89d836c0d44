"""What a stage handler takes and returns: decoded inbound messages, outbound messages, results."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.core.avro import AvroCodec
from services.core.errors import MessageError

M = TypeVar("M")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Inbound(Generic[M]):
    """One decoded message with where it came from."""

    message: M
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    raw_value: bytes | None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish: a logical topic name (the prefix is applied on send) and a key.

    `message=None` publishes a tombstone (a null value), which erases the key from a compacted topic.
    """

    topic: str
    key: str
    message: Any


HandlerResult = list[Outbound] | MessageError
Decoder = Callable[[bytes | None], M]
Handler = Callable[[list[Inbound[M]]], Awaitable[list[HandlerResult]]]


def avro_decoder(codec: AvroCodec, message_type: type[M]) -> Decoder[M]:
    def decode(value: bytes | None) -> M:
        return codec.decode(value, message_type)

    return decode


def tombstone_decoder(codec: AvroCodec, message_type: type[M]) -> Decoder[M | None]:
    """For compacted topics where a null value is a tombstone (the key is erased)."""
    def decode(value: bytes | None) -> M | None:
        return None if value is None else codec.decode(value, message_type)

    return decode


def attach(results: list[HandlerResult], extra: list[Outbound]) -> list[HandlerResult]:
    """Publish `extra` with the batch: on the last message that did not fail.

    If every message failed there is nothing the batch stands for, and `extra` must be empty.

    >>> attach([[], ValueError()], [])  # doctest: +ELLIPSIS
    [[], ValueError()]
    """
    if not extra:
        return results
    for index in range(len(results) - 1, -1, -1):
        result = results[index]
        if isinstance(result, list):
            results[index] = [*result, *extra]
            return results
    raise AssertionError("batch-level messages from a batch whose every message failed")
