"""The five messages of federated LR training, as compact bytes for the exchange topics.

Every message starts with a kind byte and a format version byte; integers are big-endian;
ciphertexts (and plaintexts mod n) are fixed-width big-endian, `width` bytes each (512 for a
2048-bit key's n^2). Bad bytes raise `ValidationError(reason="bad_fedlr_message")`, never crash.

| message | from -> to | carries |
| --- | --- | --- |
| `TrainingStart` | bank -> partner | the bank's public key n, learning rate, l2, encrypted or not |
| `BatchPlan` | bank -> partner | epoch, batch index, the batch's join ids in order |
| `PartialScores` | partner -> bank | w_p . x_p per join id, same order |
| `EncryptedResiduals` | bank -> partner | [[sigmoid(z_i) - y_i]] per row, fixed point at `exponent` |
| `MaskedGradient` | partner -> bank | per partner feature [[sum_i r_i q_ij + m_j]], re-randomised |
| `UnmaskedGradient` | bank -> partner | per partner feature (sum_i r_i q_ij + m_j [+ noise]) mod n |

>>> plan = BatchPlan(epoch=0, batch_index=3, join_ids=("133", "273"))
>>> BatchPlan.from_bytes(plan.to_bytes()) == plan
True
>>> masked = MaskedGradient(0, 3, feature_bits=12, encrypted=True, width=4, values=(5, 2**31))
>>> MaskedGradient.from_bytes(masked.to_bytes()) == masked
True
>>> decode_message(masked.to_bytes()) == masked
True
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar, Union

import numpy as np

from services.core.errors import ValidationError

FORMAT_VERSION = 1
_HEADER = struct.Struct(">BBII")  # kind, version, epoch, batch index
_BAD = "bad_fedlr_message"

Message = TypeVar("Message", bound="_Header")


class _Reader:
    """Reads fields off a payload; running off its end is a ValidationError."""

    def __init__(self, payload: bytes, at: int) -> None:
        self.payload = payload
        self.at = at

    def take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.payload):
            raise ValidationError(f"fedlr message ends early (wanted {count} bytes at {self.at})", reason=_BAD)
        chunk = self.payload[self.at:self.at + count]
        self.at += count
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def finish(self) -> None:
        if self.at != len(self.payload):
            raise ValidationError(f"fedlr message has {len(self.payload) - self.at} trailing bytes", reason=_BAD)


def _pack_ints(values: Sequence[int], width: int) -> bytes:
    try:
        return b"".join(int(value).to_bytes(width, "big") for value in values)
    except OverflowError as exc:
        raise ValidationError(f"a value does not fit in {width} bytes", reason=_BAD) from exc


def _read_ints(reader: _Reader, count: int, width: int) -> tuple[int, ...]:
    blob = reader.take(count * width)
    return tuple(int.from_bytes(blob[at:at + width], "big") for at in range(0, len(blob), width))


@dataclass(frozen=True)
class _Header:
    KIND: ClassVar[int] = 0
    epoch: int
    batch_index: int

    def _header(self) -> bytes:
        return _HEADER.pack(self.KIND, FORMAT_VERSION, self.epoch, self.batch_index)

    @classmethod
    def _open(cls, payload: bytes) -> tuple[int, int, _Reader]:
        reader = _Reader(payload, 0)
        kind, version, epoch, batch_index = reader.unpack(_HEADER.format)
        if kind != cls.KIND:
            raise ValidationError(f"expected fedlr message kind {cls.KIND} ({cls.__name__}), got {kind}", reason=_BAD)
        if version != FORMAT_VERSION:
            raise ValidationError(f"fedlr message format {version} is not {FORMAT_VERSION}", reason=_BAD)
        return epoch, batch_index, reader


def _pack_join_ids(join_ids: Sequence[str]) -> bytes:
    parts = [struct.pack(">I", len(join_ids))]
    for join_id in join_ids:
        encoded = join_id.encode()
        if len(encoded) > 255:
            raise ValidationError(f"join id of {len(encoded)} bytes is longer than 255", reason=_BAD)
        parts.append(struct.pack(">B", len(encoded)) + encoded)
    return b"".join(parts)


def _read_join_ids(reader: _Reader) -> tuple[str, ...]:
    (count,) = reader.unpack(">I")
    join_ids = []
    for _ in range(count):
        (length,) = reader.unpack(">B")
        try:
            join_ids.append(reader.take(length).decode())
        except UnicodeDecodeError as exc:
            raise ValidationError("join id is not UTF-8", reason=_BAD) from exc
    return tuple(join_ids)


@dataclass(frozen=True)
class BatchPlan(_Header):
    """Which shared rows the next step uses, in which order (an epoch's batches come one plan each)."""

    KIND: ClassVar[int] = 1
    join_ids: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return self._header() + _pack_join_ids(self.join_ids)

    @classmethod
    def from_bytes(cls, payload: bytes) -> BatchPlan:
        epoch, batch_index, reader = cls._open(payload)
        join_ids = _read_join_ids(reader)
        reader.finish()
        return cls(epoch, batch_index, join_ids)


@dataclass(frozen=True)
class PartialScores(_Header):
    """The partner's share of the log-odds, w_p . x_p, per join id (training and prediction alike)."""

    KIND: ClassVar[int] = 2
    join_ids: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.join_ids) != len(self.scores):
            raise ValidationError(f"{len(self.join_ids)} join ids but {len(self.scores)} scores", reason=_BAD)

    def to_bytes(self) -> bytes:
        return self._header() + _pack_join_ids(self.join_ids) + np.asarray(self.scores, dtype=">f8").tobytes()

    @classmethod
    def from_bytes(cls, payload: bytes) -> PartialScores:
        epoch, batch_index, reader = cls._open(payload)
        join_ids = _read_join_ids(reader)
        scores = np.frombuffer(reader.take(8 * len(join_ids)), dtype=">f8")
        reader.finish()
        if not np.isfinite(scores).all():
            raise ValidationError("partial scores must be finite numbers", reason=_BAD)
        return cls(epoch, batch_index, join_ids, tuple(scores.tolist()))


@dataclass(frozen=True)
class _Integers(_Header):
    """A header, a flag byte, a value width and fixed-width integers (ciphertexts or plaintexts mod n)."""

    encrypted: bool
    width: int
    values: tuple[int, ...]

    def _extra(self) -> bytes:
        return b""

    def to_bytes(self) -> bytes:
        return (self._header() + self._extra() + struct.pack(">BHI", int(self.encrypted), self.width, len(self.values))
                + _pack_ints(self.values, self.width))

    @classmethod
    def _read_integers(cls, reader: _Reader) -> tuple[bool, int, tuple[int, ...]]:
        flag, width, count = reader.unpack(">BHI")
        if flag not in (0, 1) or width == 0:
            raise ValidationError(f"bad flag {flag} or width {width}", reason=_BAD)
        values = _read_ints(reader, count, width)
        reader.finish()
        return bool(flag), width, values


@dataclass(frozen=True)
class EncryptedResiduals(_Integers):
    """[[r_i]] for the plan's rows; `exponent` is phe's base-16 fixed-point exponent of every r_i.

    `encrypted=False` only in the plaintext protocol check (values are then encodings mod n).
    """

    KIND: ClassVar[int] = 3
    exponent: int = -8

    def _extra(self) -> bytes:
        return struct.pack(">b", self.exponent)

    @classmethod
    def from_bytes(cls, payload: bytes) -> EncryptedResiduals:
        epoch, batch_index, reader = cls._open(payload)
        (exponent,) = reader.unpack(">b")
        encrypted, width, values = cls._read_integers(reader)
        return cls(epoch, batch_index, encrypted, width, values, exponent)


@dataclass(frozen=True)
class MaskedGradient(_Header):
    """[[sum_i r_i q_ij + m_j]] per partner feature; `feature_bits` lets the bank calibrate noise."""

    KIND: ClassVar[int] = 4
    feature_bits: int
    encrypted: bool
    width: int
    values: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return (self._header() + struct.pack(">BBHI", self.feature_bits, int(self.encrypted), self.width,
                                             len(self.values)) + _pack_ints(self.values, self.width))

    @classmethod
    def from_bytes(cls, payload: bytes) -> MaskedGradient:
        epoch, batch_index, reader = cls._open(payload)
        feature_bits, flag, width, count = reader.unpack(">BBHI")
        if flag not in (0, 1) or width == 0:
            raise ValidationError(f"bad flag {flag} or width {width}", reason=_BAD)
        values = _read_ints(reader, count, width)
        reader.finish()
        return cls(epoch, batch_index, feature_bits, bool(flag), width, values)


@dataclass(frozen=True)
class UnmaskedGradient(_Integers):
    """The bank's decryption of each masked value, mod n: uniformly random to the bank."""

    KIND: ClassVar[int] = 5

    @classmethod
    def from_bytes(cls, payload: bytes) -> UnmaskedGradient:
        epoch, batch_index, reader = cls._open(payload)
        encrypted, width, values = cls._read_integers(reader)
        return cls(epoch, batch_index, encrypted, width, values)


@dataclass(frozen=True)
class TrainingStart(_Header):
    """The bank's public key and the shared step settings, sent once before the first batch."""

    KIND: ClassVar[int] = 6
    public_key_n: int
    learning_rate: float
    l2: float
    encrypted: bool

    def to_bytes(self) -> bytes:
        key = self.public_key_n.to_bytes((self.public_key_n.bit_length() + 7) // 8, "big")
        return self._header() + struct.pack(">ddBH", self.learning_rate, self.l2, int(self.encrypted), len(key)) + key

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrainingStart:
        epoch, batch_index, reader = cls._open(payload)
        learning_rate, l2, flag, key_length = reader.unpack(">ddBH")
        n = int.from_bytes(reader.take(key_length), "big")
        reader.finish()
        if flag not in (0, 1) or n < 3 or not (math.isfinite(learning_rate) and math.isfinite(l2)):
            raise ValidationError("bad training start", reason=_BAD)
        return cls(epoch, batch_index, n, learning_rate, l2, bool(flag))


AnyMessage = Union[TrainingStart, BatchPlan, PartialScores, EncryptedResiduals, MaskedGradient, UnmaskedGradient]
MESSAGE_TYPES: dict[int, type] = {kind.KIND: kind for kind in
                                  (TrainingStart, BatchPlan, PartialScores, EncryptedResiduals, MaskedGradient,
                                   UnmaskedGradient)}


def decode_message(payload: bytes) -> AnyMessage:
    """Any fedlr message from its bytes, by its kind byte."""
    if not payload:
        raise ValidationError("empty fedlr message", reason=_BAD)
    kind = MESSAGE_TYPES.get(payload[0])
    if kind is None:
        raise ValidationError(f"unknown fedlr message kind {payload[0]}", reason=_BAD)
    message: AnyMessage = kind.from_bytes(payload)
    return message
