"""The codec: every message round-trips, the wire format is Confluent's, bad bytes fail clearly."""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import typing

import fastavro
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.core.errors import SchemaError
from services.protocol.stream_messages import (
    MESSAGE_TYPES,
    OUTCOMES,
    TRIGGER_EVENT_TYPES,
    CustomerEvent,
    ReasonCode,
    Suppression,
)

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1)
DOUBLES = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)


def strategy_for(hint: typing.Any, field_name: str) -> st.SearchStrategy[typing.Any]:
    """A hypothesis strategy that produces values valid for one message field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if field_name in ("event_type", "trigger"):
        return st.sampled_from(TRIGGER_EVENT_TYPES)
    if field_name == "outcome":
        return st.sampled_from(OUTCOMES)
    if dataclasses.is_dataclass(hint):
        return message_strategy(hint)
    if origin is tuple:
        return st.lists(strategy_for(args[0], ""), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(TEXT, DOUBLES, max_size=3)
    if origin in (typing.Union, __import__("types").UnionType):
        inner = next(arg for arg in args if arg is not type(None))
        return st.none() | strategy_for(inner, field_name)
    return {str: TEXT, int: LONGS if field_name.endswith(("_ms", "_minor", "offset")) else INTS, float: DOUBLES,
            bool: st.booleans(), bytes: st.binary(max_size=20)}[hint]


def message_strategy(cls: type) -> st.SearchStrategy[typing.Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{field.name: strategy_for(hints[field.name], field.name) for field in dataclasses.fields(cls)})


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
def test_every_message_round_trips_through_its_schema(codec: AvroCodec, message_type: type) -> None:
    @hypothesis_settings(max_examples=60, deadline=None)
    @given(message_strategy(message_type))
    def round_trip(message: typing.Any) -> None:
        assert codec.decode(codec.encode(message), message_type) == message

    round_trip()


def test_encoded_message_uses_confluent_wire_format_readable_with_plain_fastavro(codec: AvroCodec) -> None:
    message = Suppression("e1", "C1", "camp", "sms", "frequency_cap", "cap reached", 1_764_028_800_000)
    encoded = codec.encode(message)
    magic, schema_id = struct.unpack(">bI", encoded[:5])
    manifest = json.loads((REPO_ROOT / "schemas" / "manifest.json").read_text())
    assert magic == 0
    assert schema_id == manifest["schemas"]["cipherstream.Suppression"]["versions"][-1]["id"]
    schema = fastavro.parse_schema(json.loads((REPO_ROOT / "schemas" / "suppression.avsc").read_text()))
    assert fastavro.schemaless_reader(io.BytesIO(encoded[5:]), schema)["reason"] == "frequency_cap"


@pytest.mark.parametrize("payload, reason", [
    (b"", "truncated"),
    (b"\x01\x00\x00\x00\x01abc", "bad_magic"),
    (b"\x00\x00\x00\x7f\xffabc", "unknown_schema_id"),
])
def test_undecodable_bytes_raise_schema_error_with_reason(codec: AvroCodec, payload: bytes, reason: str) -> None:
    with pytest.raises(SchemaError) as raised:
        codec.decode(payload, Suppression)
    assert raised.value.reason == reason


def test_message_of_another_schema_is_refused(codec: AvroCodec) -> None:
    encoded = codec.encode(ReasonCodeHolder.suppression())
    with pytest.raises(SchemaError) as raised:
        codec.decode(encoded, CustomerEvent)
    assert raised.value.reason == "wrong_schema"


def test_corrupt_body_and_trailing_bytes_are_refused(codec: AvroCodec) -> None:
    encoded = codec.encode(ReasonCodeHolder.suppression())
    for corrupt in (encoded[:-3], encoded + b"\x00\x01"):
        with pytest.raises(SchemaError):
            codec.decode(corrupt, Suppression)


class ReasonCodeHolder:
    @staticmethod
    def suppression() -> Suppression:
        return Suppression("e", "C", None, None, "no_consent", "d", 0)


def test_reason_codes_keep_their_order(codec: AvroCodec) -> None:
    from services.protocol.stream_messages import ProductScore

    score = ProductScore("p", 0.5, "m@v1", "CS-1", False, (ReasonCode("b", 2.0), ReasonCode("a", -1.0)))
    assert score.reasons[0].feature == "b"
    assert isinstance(SchemaStore(REPO_ROOT / "schemas").current["cipherstream.CustomerScores"].schema_id, int)
