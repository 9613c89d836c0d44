"""Every message that crosses between the bank and the partner: one frozen dataclass each, with the
field names of its schemas/exchange/*.avsc. `core/avro.py` encodes it (Confluent wire format) into
`ExchangeMessage.payload`; who sends which, and what the receiver learns, is the table in
services/protocol/kinds.py.

Large values travel packed in one Avro `bytes` field, never as an array of small items (a PSI
batch holds up to 50,000 points, a residuals message 25,000 ciphertexts): points are concatenated
32-byte encodings, ciphertexts and plaintexts mod n fixed-width big-endian, `width` bytes each,
PSI join ids concatenated 16-byte ids (half the bytes of hex strings, and twice as fast to decode:
1.6 MB and 25 ms for 100,000 ids against 3.3 MB and 49 ms as an array of strings, measured here).
The `packed_*` fields are the bytes; a property of the same name without the prefix unpacks them.

Each class checks its own shape when it is built, and decoding builds it, so a malformed payload
raises `ValidationError` with the dead-letter reason of its kind (`MALFORMED`).

>>> residuals = EncryptedResiduals.of(0, 3, encrypted=True, width=4, values=(5, 2**31), exponent=-8)
>>> residuals.values, len(residuals.packed_values)
((5, 2147483648), 8)
>>> ScoreRequest.of(["00" * 16, "ff" * 16]).join_ids == ("00" * 16, "ff" * 16)
True
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from services.core.errors import ValidationError
from services.protocol.identity import JOIN_ID_BYTES

Party = Literal["bank", "partner"]

BAD_PSI_MESSAGE = "bad_psi_message"
BAD_SCORE_REQUEST = "bad_score_request"
BAD_PARTIAL_SCORES = "bad_partial_scores"
BAD_FEDLR_MESSAGE = "bad_fedlr_message"
BAD_SBT_MESSAGE = "bad_sbt_message"
_JOIN_ID_HEX = 2 * JOIN_ID_BYTES


def pack_join_ids(join_ids: Sequence[str], reason: str) -> bytes:
    """PSI join ids (32 hex characters each) as concatenated 16-byte ids.

    >>> pack_join_ids(["00" * 15 + "01"], "bad").hex()
    '00000000000000000000000000000001'
    >>> pack_join_ids(["abc"], "bad_score_request")
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: a join id is not 32 hex characters
    """
    if any(len(join_id) != _JOIN_ID_HEX for join_id in join_ids):
        raise ValidationError(f"a join id is not {_JOIN_ID_HEX} hex characters", reason=reason)
    try:
        return bytes.fromhex("".join(join_ids))
    except ValueError as exc:
        raise ValidationError(f"a join id is not {_JOIN_ID_HEX} hex characters", reason=reason) from exc


def unpack_join_ids(packed: bytes) -> tuple[str, ...]:
    text = packed.hex()
    return tuple(text[start:start + _JOIN_ID_HEX] for start in range(0, len(text), _JOIN_ID_HEX))


def _check_join_ids(packed: bytes, what: str, reason: str) -> None:
    if len(packed) % JOIN_ID_BYTES:
        raise ValidationError(f"{what} of {len(packed)} bytes is not a list of {JOIN_ID_BYTES}-byte join ids",
                              reason=reason)


def pack_ints(values: Iterable[int], width: int, reason: str = BAD_FEDLR_MESSAGE) -> bytes:
    """Non-negative integers below 256^width, fixed-width big-endian.

    >>> pack_ints([1, 258], 2).hex()
    '00010102'
    """
    try:
        return b"".join(int(value).to_bytes(width, "big") for value in values)
    except OverflowError as exc:
        raise ValidationError(f"a value does not fit in {width} bytes", reason=reason) from exc


def unpack_ints(packed: bytes, width: int) -> tuple[int, ...]:
    return tuple(int.from_bytes(packed[start:start + width], "big") for start in range(0, len(packed), width))


def _check_packed(packed: bytes, width: int, reason: str) -> None:
    if width < 1 or len(packed) % width:
        raise ValidationError(f"{len(packed)} bytes are not values of width {width}", reason=reason)


def _check_step(epoch: int, batch_index: int) -> None:
    if epoch < 0 or batch_index < 0:
        raise ValidationError(f"epoch {epoch} and batch {batch_index} must not be negative", reason=BAD_FEDLR_MESSAGE)


# --- PSI alignment (services/crypto/psi) ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PsiSession:
    """The public parameters of a PSI session, from the bank; `crypto.psi.PsiSessionParams` on either side."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.PsiSession"
    MALFORMED: ClassVar[str] = BAD_PSI_MESSAGE
    session_id: bytes
    salt: bytes
    created_at_s: int
    expires_at_s: int


@dataclass(frozen=True, slots=True)
class PsiBlindedIds:
    """k_sender·H(id) for the sender's new ids, in a random order: concatenated 32-byte points
    (the whole of batch `batch_id`, or a chunk of it from position `offset`)."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.PsiBlindedIds"
    MALFORMED: ClassVar[str] = BAD_PSI_MESSAGE
    session_id: bytes
    sender: Party
    batch_id: int
    offset: int
    points: bytes


@dataclass(frozen=True, slots=True)
class PsiDoublyBlindedIds:
    """The answer to one `PsiBlindedIds`: each point times the re-blinder's scalar, same batch id,
    offset and order; `sender` is the re-blinder."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.PsiDoublyBlindedIds"
    MALFORMED: ClassVar[str] = BAD_PSI_MESSAGE
    session_id: bytes
    sender: Party
    batch_id: int
    offset: int
    points: bytes


# --- scoring (services/models/federated.py) ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """The join ids of newly aligned customers the bank wants partial scores for."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.ScoreRequest"
    MALFORMED: ClassVar[str] = BAD_SCORE_REQUEST
    packed_join_ids: bytes

    def __post_init__(self) -> None:
        _check_join_ids(self.packed_join_ids, "score request", BAD_SCORE_REQUEST)

    @classmethod
    def of(cls, join_ids: Sequence[str]) -> ScoreRequest:
        return cls(pack_join_ids(join_ids, BAD_SCORE_REQUEST))

    @property
    def join_ids(self) -> tuple[str, ...]:
        return unpack_join_ids(self.packed_join_ids)


@dataclass(frozen=True, slots=True)
class PartialScores:
    """Per join id and partner model, w_p . x_p (the partner's share of the log-odds) and the version
    the weights belong to. `scores` is row-major, one row per join id, one column per model; NaN
    where the partner has no score.

    >>> answer = PartialScores.of({"travel": "v2"}, {"00" * 16: {"travel": -0.5}, "ff" * 16: {}})
    >>> answer.model_versions, answer.per_join_id()
    ({'travel': 'v2'}, {'00000000000000000000000000000000': {'travel': -0.5}, 'ffffffffffffffffffffffffffffffff': {}})
    """

    SCHEMA: ClassVar[str] = "cipherstream.exchange.PartialScores"
    MALFORMED: ClassVar[str] = BAD_PARTIAL_SCORES
    models: tuple[str, ...]
    versions: tuple[str, ...]
    packed_join_ids: bytes
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_join_ids(self.packed_join_ids, "partial scores", BAD_PARTIAL_SCORES)
        rows = len(self.packed_join_ids) // JOIN_ID_BYTES
        if len(self.versions) != len(self.models) or len(self.scores) != rows * len(self.models):
            raise ValidationError(f"partial scores say {len(self.models)} models with {len(self.versions)} versions "
                                  f"and {rows} rows, body holds {len(self.scores)} scores", reason=BAD_PARTIAL_SCORES)

    @classmethod
    def of(cls, model_versions: Mapping[str, str], scores: Mapping[str, Mapping[str, float]]) -> PartialScores:
        """From model name -> version and join id -> model -> score (a model left out: no score)."""
        models = tuple(sorted(model_versions))
        nan = float("nan")
        flat = tuple(per_model.get(model, nan) for per_model in scores.values() for model in models)
        return cls(models, tuple(model_versions[model] for model in models),
                   pack_join_ids(list(scores), BAD_PARTIAL_SCORES), flat)

    @property
    def join_ids(self) -> tuple[str, ...]:
        return unpack_join_ids(self.packed_join_ids)

    @property
    def model_versions(self) -> dict[str, str]:
        return dict(zip(self.models, self.versions))

    def per_join_id(self) -> dict[str, dict[str, float]]:
        """join id -> model -> score, without the models a join id has no score for."""
        width = len(self.models)
        return {join_id: {model: score for model, score in zip(self.models, self.scores[row * width:(row + 1) * width])
                          if score == score}  # NaN: no score
                for row, join_id in enumerate(self.join_ids)}


# --- federated logistic regression (services/models/fedlr.py) ---------------------------------------------

@dataclass(frozen=True, slots=True)
class TrainingStart:
    """The bank's public key and the shared step settings. Over the topics it travels inside
    `TrainingRun`; the in-process driver sends it alone."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.TrainingStart"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    public_key_n: bytes
    learning_rate: float
    l2: float
    encrypted: bool
    learning_rate_decay: float = 0.0  # the step in epoch e is learning_rate / (1 + decay * e); 0: constant

    def __post_init__(self) -> None:
        settings = (self.learning_rate, self.l2, self.learning_rate_decay)
        if self.modulus < 3 or not all(math.isfinite(value) for value in settings) or self.learning_rate_decay < 0:
            raise ValidationError("bad training start: n < 3, a setting not finite or a negative decay",
                                  reason=BAD_FEDLR_MESSAGE)

    @classmethod
    def of(cls, public_key_n: int, learning_rate: float, l2: float, encrypted: bool, *,
           learning_rate_decay: float = 0.0) -> TrainingStart:
        return cls(public_key_n.to_bytes((public_key_n.bit_length() + 7) // 8, "big"), learning_rate, l2, encrypted,
                   learning_rate_decay)

    @property
    def modulus(self) -> int:
        """The public key's n."""
        return int.from_bytes(self.public_key_n, "big")


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """The start of one training run over the topics (one run is one exchange session): the model,
    the version label both halves will carry, the training rows' join ids (the partner knows they are
    shared already: PSI told it) and the `TrainingStart`."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.TrainingRun"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    model_name: str
    version: str
    packed_join_ids: bytes
    start: TrainingStart

    def __post_init__(self) -> None:
        _check_join_ids(self.packed_join_ids, "training start", BAD_FEDLR_MESSAGE)

    @classmethod
    def of(cls, model_name: str, version: str, join_ids: Sequence[str], start: TrainingStart) -> TrainingRun:
        return cls(model_name, version, pack_join_ids(join_ids, BAD_FEDLR_MESSAGE), start)

    @property
    def join_ids(self) -> tuple[str, ...]:
        return unpack_join_ids(self.packed_join_ids)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Which shared rows the next step uses, in which order (an epoch's batches come one plan each).
    Join ids as strings: the protocol trains on whatever ids the parties share."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.BatchPlan"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    epoch: int
    batch_index: int
    join_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_step(self.epoch, self.batch_index)


@dataclass(frozen=True, slots=True)
class BatchScores:
    """Step 1: the partner's share of the log-odds, w_p . x_p, per join id of the plan (and at
    prediction, of the asked ids)."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.BatchScores"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    epoch: int
    batch_index: int
    join_ids: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_step(self.epoch, self.batch_index)
        if len(self.join_ids) != len(self.scores):
            raise ValidationError(f"{len(self.join_ids)} join ids but {len(self.scores)} scores",
                                  reason=BAD_FEDLR_MESSAGE)
        if not all(map(math.isfinite, self.scores)):
            raise ValidationError("partial scores must be finite numbers", reason=BAD_FEDLR_MESSAGE)


@dataclass(frozen=True, slots=True)
class EncryptedResiduals:
    """Step 2: [[r_i]] for the plan's rows; `exponent` is phe's base-16 fixed-point exponent of every r_i.

    `encrypted=False` only in the plaintext protocol check (values are then encodings mod n).
    """

    SCHEMA: ClassVar[str] = "cipherstream.exchange.EncryptedResiduals"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    epoch: int
    batch_index: int
    encrypted: bool
    width: int
    exponent: int
    packed_values: bytes

    def __post_init__(self) -> None:
        _check_step(self.epoch, self.batch_index)
        _check_packed(self.packed_values, self.width, BAD_FEDLR_MESSAGE)

    @classmethod
    def of(cls, epoch: int, batch_index: int, encrypted: bool, width: int, values: Iterable[int],
           exponent: int) -> EncryptedResiduals:
        return cls(epoch, batch_index, encrypted, width, exponent, pack_ints(values, width))

    @property
    def values(self) -> tuple[int, ...]:
        return unpack_ints(self.packed_values, self.width)


@dataclass(frozen=True, slots=True)
class MaskedGradient:
    """Step 3: [[sum_i r_i q_ij + m_j]] per partner feature; `feature_bits` lets the bank calibrate noise."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.MaskedGradient"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    epoch: int
    batch_index: int
    feature_bits: int
    encrypted: bool
    width: int
    packed_values: bytes

    def __post_init__(self) -> None:
        _check_step(self.epoch, self.batch_index)
        _check_packed(self.packed_values, self.width, BAD_FEDLR_MESSAGE)

    @classmethod
    def of(cls, epoch: int, batch_index: int, feature_bits: int, encrypted: bool, width: int,
           values: Iterable[int]) -> MaskedGradient:
        return cls(epoch, batch_index, feature_bits, encrypted, width, pack_ints(values, width))

    @property
    def values(self) -> tuple[int, ...]:
        return unpack_ints(self.packed_values, self.width)


@dataclass(frozen=True, slots=True)
class UnmaskedGradient:
    """Step 4: the bank's decryption of each masked value, mod n (plus its noise): uniformly random to the bank."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.UnmaskedGradient"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    epoch: int
    batch_index: int
    encrypted: bool
    width: int
    packed_values: bytes

    def __post_init__(self) -> None:
        _check_step(self.epoch, self.batch_index)
        _check_packed(self.packed_values, self.width, BAD_FEDLR_MESSAGE)

    @classmethod
    def of(cls, epoch: int, batch_index: int, encrypted: bool, width: int, values: Iterable[int]) -> UnmaskedGradient:
        return cls(epoch, batch_index, encrypted, width, pack_ints(values, width))

    @property
    def values(self) -> tuple[int, ...]:
        return unpack_ints(self.packed_values, self.width)


@dataclass(frozen=True, slots=True)
class TrainingFinish:
    """The end of a training run: the partner keeps w_p as the partner half of the run's version."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.TrainingFinish"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE


# --- online federated learning from responses (services/scoring/online_windows.py, services/partner/app.py)

@dataclass(frozen=True, slots=True)
class OnlineSession:
    """The bank opens (or reopens, after a restart of either side) an online session for one model:
    its partner half carries on from `partner_version` (services/protocol/partner_versions.py), one
    window of responses at a time; each window is a `BatchPlan` whose `batch_index` is the window's
    number, then the usual steps, over the new key in `start`."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.OnlineSession"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    model_name: str
    partner_version: str
    start: TrainingStart


@dataclass(frozen=True, slots=True)
class WindowApplied:
    """The partner has applied window `window` of `model_name` (now, or before: a replayed window is
    not applied twice) and stored its half as `partner_version`."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.WindowApplied"
    MALFORMED: ClassVar[str] = BAD_FEDLR_MESSAGE
    model_name: str
    window: int
    partner_version: str

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValidationError(f"window {self.window} must be 1 or more", reason=BAD_FEDLR_MESSAGE)


# --- federated SecureBoost (services/models/secureboost) ---------------------------------------------------

def _check_indices(reason: str, **values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValidationError(f"{name} {value} must not be negative", reason=reason)


def pack_row_positions(positions: Iterable[int]) -> bytes:
    """Row positions (into the training rows of `SbtStart`) as 4-byte big-endian integers."""
    return pack_ints(positions, 4, BAD_SBT_MESSAGE)


@dataclass(frozen=True, slots=True)
class SbtStart:
    """The start of a SecureBoost training: the bank's public key, the number of bins each party cuts
    its own columns into, and the training rows (join ids), whose positions later messages use:
    all of them, or (over the topics) the chunk from position `offset` of `total_rows`.

    >>> start = SbtStart.of("m", "v1", 35, True, 32, ["a", "b", "c"])
    >>> [(chunk.offset, chunk.join_ids) for chunk in start.chunks(2)]
    [(0, ('a', 'b')), (2, ('c',))]
    """

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtStart"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    model_name: str
    version: str
    public_key_n: bytes
    encrypted: bool
    bins: int
    total_rows: int
    offset: int
    join_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.modulus < 3 or not 2 <= self.bins <= 254 or len(set(self.join_ids)) != len(self.join_ids):
            raise ValidationError("bad SecureBoost start: n < 3, bins outside 2..254 or repeated join ids",
                                  reason=BAD_SBT_MESSAGE)
        if self.total_rows == 0 and self.offset == 0:  # written under v1, before chunks: the whole list
            object.__setattr__(self, "total_rows", len(self.join_ids))
        if self.offset < 0 or self.offset + len(self.join_ids) > self.total_rows:
            raise ValidationError(f"join ids {self.offset} to {self.offset + len(self.join_ids)} of a training of "
                                  f"{self.total_rows} rows", reason=BAD_SBT_MESSAGE)

    @classmethod
    def of(cls, model_name: str, version: str, public_key_n: int, encrypted: bool, bins: int,
           join_ids: Sequence[str]) -> SbtStart:
        return cls(model_name, version, public_key_n.to_bytes((public_key_n.bit_length() + 7) // 8, "big"), encrypted,
                   bins, len(join_ids), 0, tuple(join_ids))

    def chunks(self, ids_per_chunk: int) -> list[SbtStart]:
        """The same start with at most `ids_per_chunk` join ids per message."""
        step = max(1, ids_per_chunk)
        return [dataclasses.replace(self, offset=self.offset + start, join_ids=self.join_ids[start:start + step])
                for start in range(0, max(len(self.join_ids), 1), step)]

    def joined(self, chunks: Sequence[SbtStart]) -> SbtStart:
        """This chunk and the ones after it as one start (they must follow each other from offset 0)."""
        ids: list[str] = []
        for chunk in (self, *chunks):
            if chunk.offset != len(ids) or (chunk.model_name, chunk.version) != (self.model_name, self.version):
                raise ValidationError(f"start chunk at {chunk.offset} out of order", reason=BAD_SBT_MESSAGE)
            ids.extend(chunk.join_ids)
        return dataclasses.replace(self, offset=0, join_ids=tuple(ids))

    @property
    def complete(self) -> bool:
        return self.offset == 0 and len(self.join_ids) == self.total_rows

    @property
    def modulus(self) -> int:
        return int.from_bytes(self.public_key_n, "big")


@dataclass(frozen=True, slots=True)
class SbtGradients:
    """A tree's [[g_i + h_i 2^slot_bits]] per training row, in the order of `SbtStart`: all of them,
    or (over the topics, whose messages stay under 4 MB) the chunk from row `offset` on.

    >>> whole = SbtGradients.of(0, 0, False, 40, 2, [1, 2, 3])
    >>> [(chunk.offset, chunk.values) for chunk in whole.chunks(2)]
    [(0, (1, 2)), (2, (3,))]
    """

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtGradients"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    tree: int
    offset: int
    encrypted: bool
    slot_bits: int
    width: int
    packed_values: bytes

    def __post_init__(self) -> None:
        _check_indices(BAD_SBT_MESSAGE, tree=self.tree, offset=self.offset)
        if not 2 <= self.slot_bits <= 1024:
            raise ValidationError(f"slot_bits {self.slot_bits} outside 2..1024", reason=BAD_SBT_MESSAGE)
        _check_packed(self.packed_values, self.width, BAD_SBT_MESSAGE)

    @classmethod
    def of(cls, tree: int, offset: int, encrypted: bool, slot_bits: int, width: int, values: Iterable[int]) -> SbtGradients:
        return cls(tree, offset, encrypted, slot_bits, width, pack_ints(values, width, BAD_SBT_MESSAGE))

    @property
    def values(self) -> tuple[int, ...]:
        return unpack_ints(self.packed_values, self.width)

    @property
    def rows(self) -> int:
        return len(self.packed_values) // self.width

    def chunks(self, rows_per_chunk: int) -> list[SbtGradients]:
        """The same rows in messages of at most `rows_per_chunk` rows each."""
        step = max(1, rows_per_chunk) * self.width
        return [SbtGradients(self.tree, self.offset + start // self.width, self.encrypted, self.slot_bits, self.width,
                             self.packed_values[start:start + step])
                for start in range(0, max(len(self.packed_values), 1), step)]


@dataclass(frozen=True, slots=True)
class SbtNodeRequest:
    """The nodes of one tree level to send histograms for: `node_ids` summed from their rows
    (`row_counts` positions each, ascending, in `packed_rows`), `derived_ids` as their parent's
    histogram minus their sibling's (a node of `node_ids`)."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtNodeRequest"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    tree: int
    depth: int
    node_ids: tuple[int, ...]
    row_counts: tuple[int, ...]
    packed_rows: bytes
    derived_ids: tuple[int, ...]
    derived_parents: tuple[int, ...]
    derived_siblings: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_indices(BAD_SBT_MESSAGE, tree=self.tree, depth=self.depth)
        if len(self.row_counts) != len(self.node_ids) or sum(self.row_counts) * 4 != len(self.packed_rows) \
                or min(self.row_counts, default=1) < 1:
            raise ValidationError(f"{len(self.node_ids)} nodes, {len(self.row_counts)} row counts and "
                                  f"{len(self.packed_rows)} bytes of rows do not match", reason=BAD_SBT_MESSAGE)
        if not len(self.derived_ids) == len(self.derived_parents) == len(self.derived_siblings) \
                or not set(self.derived_siblings) <= set(self.node_ids):
            raise ValidationError("each derived node needs a parent and a sibling among the summed nodes",
                                  reason=BAD_SBT_MESSAGE)

    @classmethod
    def of(cls, tree: int, depth: int, node_rows: Mapping[int, Sequence[int]],
           derived: Sequence[tuple[int, int, int]]) -> SbtNodeRequest:
        """From node id -> its row positions, and (derived id, parent id, sibling id) triples."""
        return cls(tree, depth, tuple(node_rows), tuple(len(rows) for rows in node_rows.values()),
                   b"".join(pack_row_positions(rows) for rows in node_rows.values()),
                   tuple(d for d, _, _ in derived), tuple(p for _, p, _ in derived), tuple(s for _, _, s in derived))

    def rows_of(self) -> dict[int, tuple[int, ...]]:
        positions = unpack_ints(self.packed_rows, 4)
        out, start = {}, 0
        for node_id, count in zip(self.node_ids, self.row_counts):
            out[node_id] = positions[start:start + count]
            start += count
        return out


@dataclass(frozen=True, slots=True)
class SbtHistograms:
    """Per requested node, its candidates' [[G_L + H_L 2^s]] sums in the partner's shuffled order,
    `per_value` candidates packed in each value (2s bits apart)."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtHistograms"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    tree: int
    depth: int
    encrypted: bool
    per_value: int
    node_ids: tuple[int, ...]
    candidate_counts: tuple[int, ...]
    width: int
    packed_values: bytes

    def __post_init__(self) -> None:
        _check_indices(BAD_SBT_MESSAGE, tree=self.tree, depth=self.depth)
        _check_packed(self.packed_values, self.width, BAD_SBT_MESSAGE)
        if self.per_value < 1 or len(self.candidate_counts) != len(self.node_ids) or min(self.candidate_counts, default=0) < 0:
            raise ValidationError("histograms: per_value < 1, or node ids and candidate counts differ",
                                  reason=BAD_SBT_MESSAGE)
        expected = sum(-(-count // self.per_value) for count in self.candidate_counts)
        if expected * self.width != len(self.packed_values):
            raise ValidationError(f"histograms hold {len(self.packed_values) // self.width} values, "
                                  f"their candidate counts need {expected}", reason=BAD_SBT_MESSAGE)

    @classmethod
    def of(cls, tree: int, depth: int, encrypted: bool, per_value: int, node_values: Mapping[int, tuple[int, Sequence[int]]],
           width: int) -> SbtHistograms:
        """From node id -> (candidate count, its packed values)."""
        return cls(tree, depth, encrypted, per_value, tuple(node_values),
                   tuple(count for count, _ in node_values.values()), width,
                   b"".join(pack_ints(values, width, BAD_SBT_MESSAGE) for _, values in node_values.values()))

    def values_of(self) -> dict[int, tuple[int, tuple[int, ...]]]:
        """node id -> (candidate count, its packed values)."""
        values = unpack_ints(self.packed_values, self.width)
        out, start = {}, 0
        for node_id, count in zip(self.node_ids, self.candidate_counts):
            used = -(-count // self.per_value)
            out[node_id] = (count, values[start:start + used])
            start += used
        return out


@dataclass(frozen=True, slots=True)
class SbtSplits:
    """The nodes of a level whose best split is one of the partner's candidates, and which one."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtSplits"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    tree: int
    depth: int
    node_ids: tuple[int, ...]
    candidates: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_indices(BAD_SBT_MESSAGE, tree=self.tree, depth=self.depth)
        if len(self.node_ids) != len(self.candidates) or min(self.candidates, default=0) < 0:
            raise ValidationError("splits: one candidate (>= 0) per node", reason=BAD_SBT_MESSAGE)


@dataclass(frozen=True, slots=True)
class SbtSplitRows:
    """Per node of `SbtSplits`: the partner's split id for it, and which of the node's rows go left,
    a bitmap over the node's rows in ascending position (most significant bit first)."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtSplitRows"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    tree: int
    depth: int
    node_ids: tuple[int, ...]
    split_ids: tuple[int, ...]
    row_counts: tuple[int, ...]
    packed_left: bytes

    def __post_init__(self) -> None:
        _check_indices(BAD_SBT_MESSAGE, tree=self.tree, depth=self.depth)
        if not len(self.node_ids) == len(self.split_ids) == len(self.row_counts) \
                or sum(-(-count // 8) for count in self.row_counts) != len(self.packed_left):
            raise ValidationError("split rows: node ids, split ids, row counts and bitmaps do not match",
                                  reason=BAD_SBT_MESSAGE)

    def left_of(self) -> dict[int, tuple[int, bytes]]:
        """node id -> (split id, its bitmap)."""
        out, start = {}, 0
        for node_id, split_id, count in zip(self.node_ids, self.split_ids, self.row_counts):
            size = -(-count // 8)
            out[node_id] = (split_id, self.packed_left[start:start + size])
            start += size
        return out


@dataclass(frozen=True, slots=True)
class SbtFinish:
    """The end of a SecureBoost training: the partner keeps its split table as the version's partner half."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtFinish"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    model_name: str
    version: str
    trees: int


@dataclass(frozen=True, slots=True)
class SbtDecisions:
    """Per join id and SecureBoost model, the partner's answer to each of its splits (bit j of the
    model's bitmap, most significant first, is 1 when split j sends the person left).
    `packed_bits` is row-major: per join id, per model in order, ceil(split count / 8) bytes."""

    SCHEMA: ClassVar[str] = "cipherstream.exchange.SbtDecisions"
    MALFORMED: ClassVar[str] = BAD_SBT_MESSAGE
    models: tuple[str, ...]
    versions: tuple[str, ...]
    split_counts: tuple[int, ...]
    join_ids: tuple[str, ...]
    packed_bits: bytes

    def __post_init__(self) -> None:
        if not len(self.models) == len(self.versions) == len(self.split_counts) or min(self.split_counts, default=0) < 0:
            raise ValidationError("decisions: one version and split count per model", reason=BAD_SBT_MESSAGE)
        if self.row_bytes * len(self.join_ids) != len(self.packed_bits):
            raise ValidationError(f"decisions for {len(self.join_ids)} join ids need {self.row_bytes} bytes each, "
                                  f"body holds {len(self.packed_bits)}", reason=BAD_SBT_MESSAGE)

    @property
    def row_bytes(self) -> int:
        return sum(-(-count // 8) for count in self.split_counts)

    def bitmaps(self, model: str) -> dict[str, bytes]:
        """join id -> the model's bitmap."""
        at = self.models.index(model)
        start = sum(-(-count // 8) for count in self.split_counts[:at])
        size, row = -(-self.split_counts[at] // 8), self.row_bytes
        return {join_id: self.packed_bits[index * row + start:index * row + start + size]
                for index, join_id in enumerate(self.join_ids)}


ExchangePayload = (
    PsiSession | PsiBlindedIds | PsiDoublyBlindedIds | ScoreRequest | PartialScores | TrainingStart | TrainingRun
    | BatchPlan | BatchScores | EncryptedResiduals | MaskedGradient | UnmaskedGradient | TrainingFinish
    | OnlineSession | WindowApplied
    | SbtStart | SbtGradients | SbtNodeRequest | SbtHistograms | SbtSplits | SbtSplitRows | SbtFinish | SbtDecisions
)
EXCHANGE_MESSAGE_TYPES: tuple[type[ExchangePayload], ...] = typing.get_args(ExchangePayload)
