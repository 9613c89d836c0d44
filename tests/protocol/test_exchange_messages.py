"""Every exchange message survives the one codec unchanged, matches its .avsc field for field, and
packs its big values; bad shapes are a ValidationError with the kind's dead-letter reason."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.core.errors import ValidationError
from services.protocol.exchange_messages import (
    EXCHANGE_MESSAGE_TYPES,
    BatchPlan,
    BatchScores,
    EncryptedResiduals,
    ExchangePayload,
    MaskedGradient,
    PartialScores,
    PsiBlindedIds,
    PsiDoublyBlindedIds,
    PsiSession,
    ScoreRequest,
    TrainingFinish,
    TrainingRun,
    TrainingStart,
    UnmaskedGradient,
)

SCHEMA_DIR = REPO_ROOT / "schemas"
indices = st.integers(0, 2**32 - 1)
longs = st.integers(0, 2**63 - 1)
join_ids = st.lists(st.text(min_size=1, max_size=40), max_size=30).map(tuple)
psi_join_ids = st.lists(st.binary(min_size=16, max_size=16).map(bytes.hex), max_size=30, unique=True)
widths = st.sampled_from([1, 256, 512])
finite = st.floats(allow_nan=False, allow_infinity=False)


def training_starts() -> st.SearchStrategy[TrainingStart]:
    return st.builds(TrainingStart.of, st.integers(3, 2**2048), st.floats(0, 10), st.floats(0, 1), st.booleans())


@st.composite
def messages(draw: st.DrawFn) -> ExchangePayload:
    kind = draw(st.sampled_from(EXCHANGE_MESSAGE_TYPES))
    epoch, batch = draw(indices), draw(indices)
    if kind is PsiSession:
        return PsiSession(draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=32, max_size=32)),
                          draw(longs), draw(longs))
    if kind in (PsiBlindedIds, PsiDoublyBlindedIds):
        points = b"".join(draw(st.lists(st.binary(min_size=32, max_size=32), max_size=6)))
        return kind(draw(st.binary(min_size=16, max_size=16)), draw(st.sampled_from(["bank", "partner"])),  # type: ignore[no-any-return]
                    draw(longs), draw(longs), points)
    if kind is ScoreRequest:
        return ScoreRequest.of(draw(psi_join_ids))
    if kind is PartialScores:
        models = draw(st.lists(st.text(min_size=1, max_size=8), max_size=3, unique=True))
        versions = {model: draw(st.text(max_size=12)) for model in models}
        scores = {join_id: {model: draw(finite) for model in draw(st.lists(st.sampled_from(models), unique=True))}
                  for join_id in draw(psi_join_ids)} if models else {}
        return PartialScores.of(versions, scores)
    if kind is TrainingStart:
        return draw(training_starts())
    if kind is TrainingRun:
        return TrainingRun.of(draw(st.text(max_size=30)), draw(st.text(max_size=30)), draw(psi_join_ids),
                              draw(training_starts()))
    if kind is BatchPlan:
        return BatchPlan(epoch, batch, draw(join_ids))
    if kind is BatchScores:
        ids = draw(join_ids)
        return BatchScores(epoch, batch, ids, tuple(draw(st.lists(finite, min_size=len(ids), max_size=len(ids)))))
    if kind is TrainingFinish:
        return TrainingFinish()
    width = draw(widths)
    values = draw(st.lists(st.integers(0, 2 ** (8 * width) - 1), max_size=12))
    if kind is EncryptedResiduals:
        return EncryptedResiduals.of(epoch, batch, draw(st.booleans()), width, values, draw(st.integers(-128, 127)))
    if kind is MaskedGradient:
        return MaskedGradient.of(epoch, batch, draw(st.integers(1, 24)), draw(st.booleans()), width, values)
    return UnmaskedGradient.of(epoch, batch, draw(st.booleans()), width, values)


@settings(max_examples=300, deadline=None)
@given(message=messages())
def test_every_message_round_trips_through_the_codec(codec: AvroCodec, message: ExchangePayload) -> None:
    decoded = codec.decode(codec.encode(message), type(message))
    assert decoded == message or repr(decoded) == repr(message)  # repr: a NaN (no score) is not equal to itself


def _schema_of(message_type: type[Any]) -> dict[str, Any]:
    store = SchemaStore(SCHEMA_DIR)
    schema: dict[str, Any] = store.writer_version(message_type.SCHEMA).schema
    return schema


@pytest.mark.parametrize("message_type", EXCHANGE_MESSAGE_TYPES, ids=lambda cls: cls.__name__)
def test_every_message_has_the_field_names_of_its_schema_under_schemas_exchange(message_type: type[Any]) -> None:
    schema = _schema_of(message_type)
    assert [field["name"] for field in schema["fields"]] == [field.name for field in dataclasses.fields(message_type)]
    manifest = json.loads((SCHEMA_DIR / "manifest.json").read_text())
    assert manifest["schemas"][message_type.SCHEMA]["file"].startswith("exchange/")


def test_the_training_start_inside_a_training_run_is_the_training_start_schema() -> None:
    nested = next(field["type"] for field in _schema_of(TrainingRun)["fields"] if field["name"] == "start")
    assert nested == _schema_of(TrainingStart)


def test_points_and_ciphertexts_travel_packed_in_one_bytes_field(codec: AvroCodec) -> None:
    payload = codec.encode(EncryptedResiduals.of(0, 0, True, 512, (1, 2**4095), -8))
    assert payload.endswith((1).to_bytes(512, "big") + (2**4095).to_bytes(512, "big"))
    # header 5, epoch 1, batch 1, flag 1, width 2, exponent 1, bytes length 2: the rest is the values
    assert len(payload) == 13 + 2 * 512
    points = bytes(range(32)) * 3
    assert codec.encode(PsiBlindedIds(bytes(16), "bank", 7, 0, points)).endswith(points)
    request = ScoreRequest.of(["ab" * 16, "cd" * 16])
    assert codec.encode(request).endswith(bytes.fromhex("ab" * 16 + "cd" * 16))


@pytest.mark.parametrize("build, reason", [
    (lambda: ScoreRequest(b"x" * 17), "bad_score_request"),
    (lambda: ScoreRequest.of(["not hex at all, but 32 chars...."]), "bad_score_request"),
    (lambda: PartialScores(("m",), ("v1",), bytes(32), (0.5,)), "bad_partial_scores"),
    (lambda: PartialScores(("m", "n"), ("v1",), b"", ()), "bad_partial_scores"),
    (lambda: BatchScores(0, 0, ("a",), (float("nan"),)), "bad_fedlr_message"),
    (lambda: BatchScores(0, 0, ("a", "b"), (1.0,)), "bad_fedlr_message"),
    (lambda: EncryptedResiduals(0, 0, True, 512, -8, bytes(513)), "bad_fedlr_message"),
    (lambda: MaskedGradient.of(0, 0, 12, True, 1, [256]), "bad_fedlr_message"),
    (lambda: UnmaskedGradient(0, 0, True, 0, b""), "bad_fedlr_message"),
    (lambda: BatchPlan(-1, 0, ()), "bad_fedlr_message"),
    (lambda: TrainingStart.of(2, 0.1, 0.0, True), "bad_fedlr_message"),
    (lambda: TrainingStart.of(35, float("inf"), 0.0, True), "bad_fedlr_message"),
])
def test_a_message_of_the_wrong_shape_is_a_validation_error_with_its_reason(build: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        build()
    assert raised.value.reason == reason
