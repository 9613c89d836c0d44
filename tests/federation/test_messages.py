"""Every fedlr message survives to_bytes/from_bytes unchanged; bad bytes are a clear ValidationError."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import ValidationError
from services.protocol.fedlr_messages import (
    BatchPlan,
    EncryptedResiduals,
    MaskedGradient,
    PartialScores,
    TrainingStart,
    UnmaskedGradient,
    decode_message,
)

indices = st.integers(0, 2**32 - 1)
join_ids = st.lists(st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255), max_size=30)
widths = st.sampled_from([256, 512])


@st.composite
def messages(draw: st.DrawFn) -> object:
    epoch, batch = draw(indices), draw(indices)
    kind = draw(st.sampled_from(["start", "plan", "scores", "residuals", "masked", "unmasked"]))
    if kind == "start":
        return TrainingStart(epoch, batch, draw(st.integers(3, 2**2048)), draw(st.floats(0, 10)),
                             draw(st.floats(0, 1)), draw(st.booleans()))
    if kind == "plan":
        return BatchPlan(epoch, batch, tuple(draw(join_ids)))
    if kind == "scores":
        ids = tuple(draw(join_ids))
        scores = tuple(draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=len(ids),
                                     max_size=len(ids))))
        return PartialScores(epoch, batch, ids, scores)
    width = draw(widths)
    values = tuple(draw(st.lists(st.integers(0, 2 ** (8 * width) - 1), max_size=12)))
    if kind == "residuals":
        return EncryptedResiduals(epoch, batch, draw(st.booleans()), width, values, draw(st.integers(-128, 127)))
    if kind == "masked":
        return MaskedGradient(epoch, batch, draw(st.integers(1, 24)), draw(st.booleans()), width, values)
    return UnmaskedGradient(epoch, batch, draw(st.booleans()), width, values)


@settings(max_examples=150, deadline=None)
@given(message=messages())
def test_every_message_round_trips_through_bytes(message: object) -> None:
    payload = message.to_bytes()  # type: ignore[attr-defined]
    assert type(message).from_bytes(payload) == message  # type: ignore[attr-defined]
    assert decode_message(payload) == message


def test_ciphertexts_travel_as_fixed_width_big_endian() -> None:
    payload = EncryptedResiduals(0, 0, True, 512, (1, 2**4095), -8).to_bytes()
    assert payload.endswith((1).to_bytes(512, "big") + (2**4095).to_bytes(512, "big"))
    assert len(payload) == 10 + 1 + 7 + 2 * 512


@settings(max_examples=150, deadline=None)
@given(message=messages(), cut=st.integers(1, 40))
def test_truncated_or_padded_bytes_are_a_validation_error(message: object, cut: int) -> None:
    payload = message.to_bytes()  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        decode_message(payload + b"\x00")
    if cut < len(payload):
        with pytest.raises(ValidationError):
            decode_message(payload[:-cut])


def test_unknown_kind_and_wrong_kind_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown fedlr message kind 99"):
        decode_message(bytes([99]) + bytes(9))
    with pytest.raises(ValidationError, match="expected fedlr message kind"):
        MaskedGradient.from_bytes(BatchPlan(0, 0, ("a",)).to_bytes())
    with pytest.raises(ValidationError, match="finite"):
        PartialScores.from_bytes(PartialScores(0, 0, ("a",), (float("nan"),)).to_bytes())
