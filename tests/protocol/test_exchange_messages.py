"""Every exchange message survives the one codec unchanged, matches its .avsc field for field, and
packs its big values; bad bytes and bad shapes are a ValidationError with the kind's dead-letter
reason, and an envelope from the wrong side or of an unknown kind is refused."""
from __future__ import annotations

import dataclasses
import io
import json
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.core.errors import ValidationError
from services.protocol.exchange import check_incoming, decode_any, decode_payload, envelope, open_payload
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
    SbtDecisions,
    SbtFinish,
    SbtGradients,
    SbtHistograms,
    SbtNodeRequest,
    SbtSplitRows,
    SbtSplits,
    SbtStart,
    ScoreRequest,
    TrainingFinish,
    TrainingRun,
    TrainingStart,
    UnmaskedGradient,
)
from services.protocol.stream_messages import ExchangeMessage

SCHEMA_DIR = REPO_ROOT / "schemas"
indices = st.integers(0, 2**32 - 1)
longs = st.integers(0, 2**63 - 1)
join_ids = st.lists(st.text(min_size=1, max_size=40), max_size=30).map(tuple)
psi_join_ids = st.lists(st.binary(min_size=16, max_size=16).map(bytes.hex), max_size=30, unique=True)
widths = st.sampled_from([1, 256, 512])
finite = st.floats(allow_nan=False, allow_infinity=False)


def training_starts() -> st.SearchStrategy[TrainingStart]:
    return st.builds(TrainingStart.of, st.integers(3, 2**2048), st.floats(0, 10), st.floats(0, 1), st.booleans())


small = st.integers(0, 2**31 - 1)
node_ids = st.lists(small, max_size=6, unique=True).map(tuple)


@st.composite
def sbt_messages(draw: st.DrawFn, kind: type[ExchangePayload]) -> ExchangePayload | None:
    tree, depth = draw(small), draw(small)
    if kind is SbtStart:
        return SbtStart.of(draw(st.text(max_size=20)), draw(st.text(max_size=20)), draw(st.integers(3, 2**2048)),
                           draw(st.booleans()), draw(st.integers(2, 254)), draw(join_ids.map(lambda ids: tuple(set(ids)))))
    if kind is SbtGradients:
        width = draw(widths)
        values = draw(st.lists(st.integers(0, 2 ** (8 * width) - 1), max_size=8))
        return SbtGradients.of(tree, draw(small), draw(st.booleans()), draw(st.integers(2, 1024)), width, values)
    if kind is SbtNodeRequest:
        summed = draw(node_ids)
        rows = {node: draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5)) for node in summed}
        derived = [(draw(small), draw(small), draw(st.sampled_from(summed))) for _ in range(draw(st.integers(0, 3)))] \
            if summed else []
        return SbtNodeRequest.of(tree, depth, rows, derived)
    if kind is SbtHistograms:
        width, per_value = draw(widths), draw(st.integers(1, 30))
        values = {node: (count := draw(st.integers(0, 50)),
                         draw(st.lists(st.integers(0, 2 ** (8 * width) - 1), min_size=-(-count // per_value),
                                       max_size=-(-count // per_value))))
                  for node in draw(node_ids)}
        return SbtHistograms.of(tree, depth, draw(st.booleans()), per_value, values, width)
    if kind is SbtSplits:
        nodes = draw(node_ids)
        return SbtSplits(tree, depth, nodes, tuple(draw(small) for _ in nodes))
    if kind is SbtSplitRows:
        nodes = draw(node_ids)
        counts = tuple(draw(st.integers(0, 40)) for _ in nodes)
        bitmaps = b"".join(draw(st.binary(min_size=-(-c // 8), max_size=-(-c // 8))) for c in counts)
        return SbtSplitRows(tree, depth, nodes, tuple(draw(small) for _ in nodes), counts, bitmaps)
    if kind is SbtFinish:
        return SbtFinish(draw(st.text(max_size=20)), draw(st.text(max_size=20)), draw(small))
    if kind is SbtDecisions:
        models = tuple(draw(st.lists(st.text(min_size=1, max_size=8), max_size=3, unique=True)))
        counts = tuple(draw(st.integers(0, 20)) for _ in models)
        ids = draw(join_ids)
        row = sum(-(-c // 8) for c in counts)
        return SbtDecisions(models, tuple(draw(st.text(max_size=5)) for _ in models), counts, ids,
                            draw(st.binary(min_size=row * len(ids), max_size=row * len(ids))))
    return None


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
    sbt = draw(sbt_messages(kind))
    if sbt is not None:
        return sbt
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
    payload = codec.encode(message)
    for decoded in (codec.decode(payload, type(message)), decode_payload(codec, payload, type(message)),
                    decode_any(codec, payload)):
        assert decoded == message or repr(decoded) == repr(message)  # repr: a NaN (no score) is not equal to itself


@settings(max_examples=150, deadline=None)
@given(message=messages(), cut=st.integers(1, 40))
def test_truncated_or_padded_bytes_are_a_validation_error_with_the_kinds_reason(
    codec: AvroCodec, message: ExchangePayload, cut: int,
) -> None:
    payload = codec.encode(message)
    with pytest.raises(ValidationError) as raised:
        decode_payload(codec, payload + b"\x00", type(message))
    assert raised.value.reason == type(message).MALFORMED
    if cut < len(payload):
        with pytest.raises(ValidationError) as raised:
            decode_payload(codec, payload[:-cut], type(message))
        assert raised.value.reason == type(message).MALFORMED
        with pytest.raises(ValidationError):
            decode_any(codec, payload[:-cut])


def test_unknown_schema_and_wrong_message_are_refused(codec: AvroCodec) -> None:
    with pytest.raises(ValidationError, match="unknown schema id 99999"):
        decode_any(codec, b"\x00" + (99999).to_bytes(4, "big") + bytes(9))
    with pytest.raises(ValidationError, match=r"expected cipherstream\.exchange\.MaskedGradient") as raised:
        decode_payload(codec, codec.encode(BatchPlan(0, 0, ("a",))), MaskedGradient)
    assert raised.value.reason == "bad_fedlr_message"
    one_score = codec.encode(BatchScores(0, 0, ("a",), (1.0,)))
    nan_score = one_score.replace(struct.pack("<d", 1.0), struct.pack("<d", float("nan")))
    assert nan_score != one_score
    with pytest.raises(ValidationError, match="finite"):
        decode_payload(codec, nan_score, BatchScores)


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
    (lambda: SbtStart.of("m", "v1", 35, True, 300, ("a",)), "bad_sbt_message"),
    (lambda: SbtStart.of("m", "v1", 35, True, 32, ("a", "a")), "bad_sbt_message"),
    (lambda: SbtStart("m", "v1", bytes([35]), True, 32, 1, 0, ("a", "b")), "bad_sbt_message"),
    (lambda: SbtGradients(0, 0, True, 40, 512, bytes(511)), "bad_sbt_message"),
    (lambda: SbtGradients(0, -1, True, 40, 512, bytes(512)), "bad_sbt_message"),
    (lambda: SbtNodeRequest(0, 0, (1,), (2,), bytes(4), (), (), ()), "bad_sbt_message"),
    (lambda: SbtNodeRequest(0, 0, (1,), (1,), bytes(4), (2,), (0,), (5,)), "bad_sbt_message"),
    (lambda: SbtHistograms(0, 0, True, 4, (1,), (9,), 512, bytes(512 * 2)), "bad_sbt_message"),
    (lambda: SbtSplits(0, 0, (1, 2), (0,)), "bad_sbt_message"),
    (lambda: SbtSplitRows(0, 0, (1,), (0,), (9,), bytes(1)), "bad_sbt_message"),
    (lambda: SbtDecisions(("m",), ("v",), (9,), ("a",), bytes(1)), "bad_sbt_message"),
])
def test_a_message_of_the_wrong_shape_is_a_validation_error_with_its_reason(build: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        build()
    assert raised.value.reason == reason


def test_an_envelope_carries_its_message_under_the_kind_of_its_class(codec: AvroCodec) -> None:
    request = ScoreRequest.of(["ab" * 16])
    outbound = envelope(codec, request, "bank", "s1", correlation_id="m0")
    sent = outbound.message
    assert (outbound.topic, outbound.key, sent.kind, sent.sender, sent.correlation_id) == (
        "exchange.to_partner", "s1", "score_request", "bank", "m0")
    assert check_incoming(sent, "partner").message is ScoreRequest
    assert open_payload(codec, sent, ScoreRequest) == request
    with pytest.raises(ValueError, match="the partner does not send it"):
        envelope(codec, request, "partner", "s1")


@pytest.mark.parametrize("kind, sender, receiver, reason", [
    ("nonsense", "partner", "bank", "unknown_kind"),
    ("fedlr_", "partner", "bank", "unknown_kind"),
    ("psi_blinded", "bank", "bank", "wrong_sender"),
    ("fedlr_plan", "partner", "bank", "wrong_sender"),
    ("score_request", "partner", "bank", "wrong_sender"),
    ("partial_scores", "bank", "partner", "wrong_sender"),
])
def test_an_envelope_of_an_unknown_kind_or_from_the_wrong_side_is_refused(kind: str, sender: str, receiver: str,
                                                                         reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        check_incoming(ExchangeMessage("m1", kind, sender, "s1", "", b"", 0), receiver)  # type: ignore[arg-type]
    assert raised.value.reason == reason


@pytest.mark.parametrize("kind, message_type, reason", [
    ("psi_blinded", PsiBlindedIds, "bad_psi_message"),
    ("psi_session", PsiSession, "bad_psi_message"),
    ("score_request", ScoreRequest, "bad_score_request"),
    ("partial_scores", PartialScores, "bad_partial_scores"),
    ("fedlr_residuals", EncryptedResiduals, "bad_fedlr_message"),
    ("fedlr_start", TrainingRun, "bad_fedlr_message"),
])
def test_a_payload_that_does_not_decode_as_its_kind_is_refused_with_the_kinds_reason(
    codec: AvroCodec, kind: str, message_type: type[Any], reason: str,
) -> None:
    for payload in (b"", b"\x00\x00", codec.encode(TrainingFinish()), b"\x01" + bytes(20)):
        with pytest.raises(ValidationError) as raised:
            open_payload(codec, ExchangeMessage("m1", kind, "bank", "s1", "", payload, 0), message_type)
        assert raised.value.reason == reason
    with pytest.raises(ValidationError) as raised:
        open_payload(codec, ExchangeMessage("m1", kind, "bank", "s1", "", b"", 0), BatchPlan)
    assert raised.value.reason == reason and "carries" in str(raised.value)


def test_a_sbt_start_written_under_v1_reads_as_one_whole_chunk(codec: AvroCodec) -> None:
    old = json.loads((SCHEMA_DIR / "history" / "cipherstream.exchange.SbtStart" / "v1.avsc").read_text())
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), {
        "model_name": "m", "version": "v1", "public_key_n": bytes([35]), "encrypted": True, "bins": 32,
        "join_ids": ["a", "b"]})
    [v1] = [v for v in codec.store.by_id.values() if v.name == "cipherstream.exchange.SbtStart" and v.version == 1]
    assert v1.schema_id != codec.store.current["cipherstream.exchange.SbtStart"].schema_id  # v2 writes now
    payload = struct.pack(">bI", 0, v1.schema_id) + buffer.getvalue()
    start = decode_payload(codec, payload, SbtStart)
    assert (start.offset, start.total_rows, start.join_ids) == (0, 2, ("a", "b")) and start.complete
