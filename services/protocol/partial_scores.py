"""Score requests and partial scores: what the bank asks for and what the partner answers.

A request names join ids only. An answer carries, per join id and federated model, the
partner's partial linear score w_p . x_p: one number per model, never a feature. The bank adds
its own partial score and applies the sigmoid (FATE's hetero-LR prediction). See the README's
"What each party learns".

>>> ids = ["00" * 16, "ff" * 16]
>>> decode_request(encode_request(ids)) == ids
True
>>> answer = PartialScores({"travel_insurance": "fedlr.travel_insurance@v2"}, {ids[0]: {"travel_insurance": -0.5}})
>>> PartialScores.from_bytes(answer.to_bytes()) == answer
True
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from services.core.errors import ValidationError
from services.protocol.identity import JOIN_ID_BYTES

_SCORE = struct.Struct(">d")


def encode_request(join_ids: list[str]) -> bytes:
    return b"".join(bytes.fromhex(join_id) for join_id in join_ids)


def decode_request(payload: bytes) -> list[str]:
    if len(payload) % JOIN_ID_BYTES:
        raise ValidationError(f"score request of {len(payload)} bytes is not a list of {JOIN_ID_BYTES}-byte join ids",
                              reason="bad_score_request")
    return [payload[start:start + JOIN_ID_BYTES].hex() for start in range(0, len(payload), JOIN_ID_BYTES)]


@dataclass(frozen=True)
class PartialScores:
    """model_versions: model name -> version the weights belong to; scores: join id -> model -> w_p . x_p."""

    model_versions: dict[str, str]
    scores: dict[str, dict[str, float]]

    def to_bytes(self) -> bytes:
        models = sorted(self.model_versions)
        parts = [struct.pack(">H", len(models))]
        for model in models:
            for text in (model, self.model_versions[model]):
                encoded = text.encode()
                parts.append(struct.pack(">B", len(encoded)) + encoded)
        parts.append(struct.pack(">I", len(self.scores)))
        for join_id, per_model in self.scores.items():
            parts.append(bytes.fromhex(join_id))
            parts.extend(_SCORE.pack(per_model.get(model, float("nan"))) for model in models)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, payload: bytes) -> PartialScores:
        try:
            return cls._read(payload)
        except (struct.error, UnicodeDecodeError, IndexError) as error:
            raise ValidationError(f"malformed partial scores: {error}", reason="bad_partial_scores") from error

    @classmethod
    def _read(cls, payload: bytes) -> PartialScores:
        (model_count,), at = struct.unpack_from(">H", payload), 2
        versions: dict[str, str] = {}
        models = []
        for _ in range(model_count):
            texts = []
            for _ in range(2):
                length = payload[at]
                texts.append(payload[at + 1:at + 1 + length].decode())
                at += 1 + length
            models.append(texts[0])
            versions[texts[0]] = texts[1]
        (rows,), at = struct.unpack_from(">I", payload, at), at + 4
        row_bytes = JOIN_ID_BYTES + _SCORE.size * model_count
        if len(payload) - at != rows * row_bytes:
            raise ValidationError(f"partial scores say {rows} rows, body holds {len(payload) - at} bytes",
                                  reason="bad_partial_scores")
        scores: dict[str, dict[str, float]] = {}
        for _ in range(rows):
            join_id = payload[at:at + JOIN_ID_BYTES].hex()
            at += JOIN_ID_BYTES
            values = struct.unpack_from(f">{model_count}d", payload, at)
            at += _SCORE.size * model_count
            scores[join_id] = {model: value for model, value in zip(models, values) if value == value}  # NaN: no score
        return cls(versions, scores)
