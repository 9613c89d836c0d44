"""Hypothesis strategies for malformed input of every kind a topic can receive."""
from __future__ import annotations

import json
import struct

from hypothesis import strategies as st

from services.core.avro import AvroCodec

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
HUGE_NUMBERS = st.sampled_from([10**30, -(10**30), 1e308, "9" * 400, "1e400", "-1e400", "1e-400"])
HUGE_DATES = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1", "1e400", 10**30])
# Fields where a huge value is invalid, per table (any field may also get an oversize string).
HUGE_FIELDS = {"transactions": {"amount": HUGE_NUMBERS, "booked_at": HUGE_DATES}, "logins": {"at": HUGE_DATES},
               "customers": {"monthly_income": HUGE_NUMBERS, "balance": HUGE_NUMBERS, "birth_date": HUGE_DATES,
                             "opened_at": HUGE_DATES}}
TABLE_FIELDS = {
    "transactions": ["txn_id", "customer_id", "kind", "amount", "currency", "country", "booked_at"],
    "logins": ["login_id", "customer_id", "at", "device"],
    "customers": ["customer_id", "birth_date", "opened_at", "monthly_income", "balance", "products", "segment",
                  "preferred_channel", "timezone", "consent_marketing"],
}


@st.composite
def malformed_cdc(draw: st.DrawFn) -> bytes:
    """Raw CDC that must be refused: bad bytes, bad JSON, wrong types, missing fields, huge values."""
    kind = draw(st.sampled_from(["bytes", "utf8", "json", "types", "missing", "huge", "op"]))
    table = draw(st.sampled_from(sorted(TABLE_FIELDS)))
    if kind == "bytes":
        return draw(st.binary(min_size=0, max_size=200).filter(lambda raw: not raw.strip().startswith(b"{")))
    if kind == "utf8":
        return b'{"op": "c", "source": {"table": "' + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + b'"}}'
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()[: draw(st.integers(1, 200))] + b"{"
    after = {field: draw(JSON_VALUES) for field in TABLE_FIELDS[table]}
    if kind == "missing":
        after = {field: "x" for field in TABLE_FIELDS[table][: draw(st.integers(0, len(TABLE_FIELDS[table]) - 1))]}
    if kind == "huge":
        after = {field: "1" for field in TABLE_FIELDS[table]}
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(HUGE_FIELDS[table])))
            after[field] = draw(HUGE_FIELDS[table][field])
        else:
            after[draw(st.sampled_from(TABLE_FIELDS[table]))] = "x" * 70_000
    document = {"op": draw(st.sampled_from(["c", "u", "x", "", 5])) if kind == "op" else "c",
                "source": {"table": table, "ts_ms": 1}, "after": after}
    return json.dumps(document).encode()


@st.composite
def malformed_avro(draw: st.DrawFn, codec: AvroCodec, schema_name: str) -> bytes:
    """Bytes on an Avro topic that must be refused: no header, wrong magic, unknown or foreign
    schema id (another schema or version), truncated or corrupted bodies, absurd lengths."""
    kind = draw(st.sampled_from(["short", "magic", "unknown_id", "foreign", "garbage", "huge_length"]))
    own_id = codec.store.current[schema_name].schema_id
    foreign_ids = [version.schema_id for version in codec.store.by_id.values() if version.name != schema_name]
    if kind == "short":
        return draw(st.binary(max_size=4))
    if kind == "magic":
        return bytes([draw(st.integers(1, 255))]) + draw(st.binary(min_size=4, max_size=40))
    if kind == "unknown_id":
        return struct.pack(">bI", 0, draw(st.integers(10_000, 2**32 - 1))) + draw(st.binary(max_size=40))
    if kind == "foreign":
        return struct.pack(">bI", 0, draw(st.sampled_from(foreign_ids))) + draw(st.binary(max_size=40))
    if kind == "huge_length":
        # a string length varint claiming ~2^62 bytes
        return struct.pack(">bI", 0, own_id) + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + draw(st.binary(max_size=10))
    return struct.pack(">bI", 0, own_id) + draw(st.binary(max_size=3))


PARTNER_FIELDS = ["partner_record_id", "national_id", "features", "updated_at"]


@st.composite
def malformed_partner_feed(draw: st.DrawFn) -> bytes:
    """The partner's raw feed, broken: bad bytes and JSON, wrong types, missing or out-of-range features."""
    from services.partner.features import FEATURE_NAMES

    kind = draw(st.sampled_from(["bytes", "json", "types", "missing", "feature"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200).filter(lambda raw: not raw.strip().startswith(b"{")))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()[: draw(st.integers(1, 200))] + b"{"
    features = {name: 1.0 for name in FEATURE_NAMES}
    record: dict[str, object] = {"partner_record_id": "P1", "national_id": "110105194912310021",
                                 "features": features, "updated_at": "2026-11-25T08:00:00Z"}
    if kind == "types":
        record[draw(st.sampled_from(PARTNER_FIELDS))] = draw(st.sampled_from([[1], {"a": []}, True, "", -1, "x" * 70]))
    elif kind == "missing":
        del record[draw(st.sampled_from(PARTNER_FIELDS))]
    else:
        features[draw(st.sampled_from(FEATURE_NAMES))] = draw(st.sampled_from([-1.0, 1e300, "nan", "x", None]))
        if draw(st.booleans()):
            features[draw(st.text(min_size=1, max_size=8))] = 1.0
            features.pop(FEATURE_NAMES[0], None)
    return json.dumps(record).encode()


@st.composite
def malformed_exchange(draw: st.DrawFn, codec: AvroCodec, sender: str) -> bytes:
    """A well-formed ExchangeMessage envelope whose content must be refused: wrong sender, unknown
    kind, a PSI or score payload that does not parse, or a session the receiver does not have."""
    from services.protocol.stream_messages import ExchangeMessage

    kind = draw(st.sampled_from(["psi_blinded", "psi_doubly_blinded", "partial_scores", "score_request", "nonsense"]))
    wrong_sender = draw(st.booleans()) and kind != "nonsense"
    payload = draw(st.binary(max_size=120))
    if kind == "score_request":
        payload = payload + b"x" if len(payload) % 16 == 0 else payload
    message = ExchangeMessage(f"m{draw(st.integers(0, 10**9))}", kind,
                              ("partner" if sender == "bank" else "bank") if wrong_sender else sender,
                              draw(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)), "", payload, 1)
    return codec.encode(message)
