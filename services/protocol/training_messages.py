"""Federated training over the exchange topics: the envelope kinds and the start message.

One training run is one exchange session (its run id); the steps' payloads are the protocol
messages of services/protocol/fedlr_messages.py, unchanged. `fedlr_start` also names the model, the
version label both halves will carry, and the join ids of the training rows (the partner already
knows they are shared: PSI told it).

>>> start = TrainingRun("fedlr.travel_insurance", "fedlr.travel_insurance@ab12", ("00" * 16,), b"\\x06")
>>> TrainingRun.from_bytes(start.to_bytes()) == start
True
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from services.core.errors import ValidationError
from services.protocol.identity import JOIN_ID_BYTES

FEDLR_START = "fedlr_start"          # bank -> partner: TrainingRun
FEDLR_PLAN = "fedlr_plan"            # bank -> partner: BatchPlan
FEDLR_SCORES = "fedlr_scores"        # partner -> bank: PartialScores (step 1)
FEDLR_RESIDUALS = "fedlr_residuals"  # bank -> partner: EncryptedResiduals (step 2)
FEDLR_MASKED = "fedlr_masked"        # partner -> bank: MaskedGradient (step 3)
FEDLR_UNMASKED = "fedlr_unmasked"    # bank -> partner: UnmaskedGradient (step 4)
FEDLR_FINISH = "fedlr_finish"        # bank -> partner: keep w_p as the model's partner half
FEDLR_KINDS = frozenset({FEDLR_START, FEDLR_PLAN, FEDLR_SCORES, FEDLR_RESIDUALS, FEDLR_MASKED, FEDLR_UNMASKED,
                         FEDLR_FINISH})


@dataclass(frozen=True)
class TrainingRun:
    model_name: str
    version: str
    join_ids: tuple[str, ...]
    training_start: bytes  # services.protocol.fedlr_messages.TrainingStart

    def to_bytes(self) -> bytes:
        parts = []
        for text in (self.model_name, self.version):
            encoded = text.encode()
            parts.append(struct.pack(">B", len(encoded)) + encoded)
        parts.append(struct.pack(">I", len(self.join_ids)))
        parts.extend(bytes.fromhex(join_id) for join_id in self.join_ids)
        return b"".join(parts) + self.training_start

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrainingRun:
        try:
            at, texts = 0, []
            for _ in range(2):
                length = payload[at]
                texts.append(payload[at + 1:at + 1 + length].decode())
                at += 1 + length
            (count,) = struct.unpack_from(">I", payload, at)
            at += 4
            end = at + count * JOIN_ID_BYTES
            if end > len(payload):
                raise ValueError(f"{count} join ids do not fit in {len(payload)} bytes")
            join_ids = tuple(payload[start:start + JOIN_ID_BYTES].hex() for start in range(at, end, JOIN_ID_BYTES))
        except (IndexError, struct.error, UnicodeDecodeError, ValueError) as error:
            raise ValidationError(f"malformed training start: {error}", reason="bad_fedlr_message") from error
        return cls(texts[0], texts[1], join_ids, payload[end:])
