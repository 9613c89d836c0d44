"""The in-process wire of a two-party protocol: each message as the exchange topics carry it.

A training driver that runs both parties in one process (tests, benchmarks) passes every message
through `Wire.to_partner` or `Wire.to_bank`: encoded by the one Avro codec, counted, optionally
recorded, and decoded again on the other side, so each party only ever gets what the bytes say.

>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> from services.protocol.exchange_messages import TrainingFinish
>>> wire = Wire(AvroCodec(SchemaStore(REPO_ROOT / "schemas")), transcript=[])
>>> wire.to_partner(TrainingFinish()), wire.bytes_to_partner, [direction for direction, _ in wire.transcript or []]
(TrainingFinish(), 5, ['to_partner'])
"""
from __future__ import annotations

from typing import TypeVar

from services.core.avro import AvroCodec
from services.protocol.exchange_messages import ExchangePayload

PLAINTEXT_MODULUS = (1 << 2047) + 1 + 2 * 1_000_003
"""The plaintext protocol check of both drivers (fedlr, SecureBoost): a fixed odd modulus the size of
a 2048-bit key, so encodings, masks and widths behave as with a key (nobody decrypts in this mode)."""

M = TypeVar("M", bound=ExchangePayload)
Transcript = list[tuple[str, bytes]]


class Wire:
    """Counts the bytes each way; `transcript`, if given, receives (direction, payload bytes) per message."""

    def __init__(self, codec: AvroCodec, transcript: Transcript | None = None) -> None:
        self.codec = codec
        self.transcript = transcript
        self.bytes_to_partner = 0
        self.bytes_to_bank = 0

    def _cross(self, direction: str, message: M) -> M:
        payload = self.codec.encode(message)
        if direction == "to_partner":
            self.bytes_to_partner += len(payload)
        else:
            self.bytes_to_bank += len(payload)
        if self.transcript is not None:
            self.transcript.append((direction, payload))
        return self.codec.decode(payload, type(message))

    def to_partner(self, message: M) -> M:
        return self._cross("to_partner", message)

    def to_bank(self, message: M) -> M:
        return self._cross("to_bank", message)
