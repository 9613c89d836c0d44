"""The hand-written CustomerScores writer: byte for byte what fastavro writes, or not used at all."""
from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.core.avro import AvroCodec, SchemaStore, schema_fingerprint
from services.core.config import REPO_ROOT
from services.core.errors import SchemaError
from services.core.records import to_record
from services.protocol.stream_messages import CustomerScores, ProductScore, ReasonCode, Suppression
from services.scoring.avro_writer import FAST_WRITERS, write_customer_scores
from tests.core.test_avro import message_strategy

SCORES_SCHEMA = "cipherstream.CustomerScores"


def fastavro_body(codec: AvroCodec, message: CustomerScores) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, codec.store.writer_version(SCORES_SCHEMA).parsed, to_record(message))
    return buffer.getvalue()


def test_fast_writer_follows_the_current_schema(codec: AvroCodec) -> None:
    """A schema change makes this fail: update the writer (and its fingerprint) with the schema."""
    fingerprint, _ = FAST_WRITERS[CustomerScores]
    assert fingerprint == schema_fingerprint(codec.store.writer_version(SCORES_SCHEMA).schema)


@hypothesis_settings(max_examples=300, deadline=None)
@given(message=message_strategy(CustomerScores), propensity=st.floats(), long_text=st.text(min_size=60, max_size=200))
def test_fast_writer_writes_the_same_bytes_as_fastavro(codec: AvroCodec, message: CustomerScores, propensity: float,
                                                        long_text: str) -> None:
    assert write_customer_scores(message) == fastavro_body(codec, message)
    # Lengths past one varint byte, NaN and infinities too.
    score = ProductScore(long_text, propensity, "m@v1", long_text, True, tuple(ReasonCode(long_text, propensity) for _ in range(70)))
    longer = CustomerScores(**{**to_record(message), "scores": (score,) * 65, "products_held": (long_text,) * 64,
                               "event_id": long_text})
    assert write_customer_scores(longer) == fastavro_body(codec, longer)


def sample_scores(**changes: object) -> CustomerScores:
    values = dict(event_id="e1", customer_id="C1", event_type="app_login", received_at_ms=1, scored_at_ms=2, segment="mass",
                  preferred_channel="sms", timezone="UTC", age=40, products_held=(), consent_marketing=True, scores=())
    return CustomerScores(**(values | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [{"received_at_ms": 2**63}, {"age": 2**31}, {"age": -(2**31) - 1}, {"event_type": "unknown"}])
def test_out_of_range_values_are_a_schema_error_not_a_crash(changes: dict[str, object]) -> None:
    codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"), FAST_WRITERS)  # as scoring builds it
    with pytest.raises(SchemaError):
        codec.encode(sample_scores(**changes))


def test_fastavro_path_refuses_out_of_range_longs_clearly(codec: AvroCodec) -> None:
    """fastavro raises OverflowError for a long past 64 bits: the codec turns it into a SchemaError."""
    with pytest.raises(SchemaError):
        codec.encode(Suppression("e", "C", None, None, "no_consent", "d", 2**64))


def test_a_writer_for_an_older_schema_is_not_used() -> None:
    codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"), {CustomerScores: ("0" * 64, lambda message: b"wrong")})
    message = sample_scores(scores=(ProductScore("p", 0.5, "m@v1", "CS-1", False, (ReasonCode("a", 1.0),)),))
    assert codec.decode(codec.encode(message), CustomerScores) == message

