"""The partner's feed: one JSON record per person, validated into PartnerFeatures.

`{"op": "upsert"|"delete", "partner_record_id": ..., "national_id": ..., "features": {...},
"updated_at": ISO 8601}`. Every feature in FEATURE_SPEC must be present, finite and in its range;
anything else raises ValidationError and goes to dlq.partner.features.raw with the reason.
The national id is identity data: it is used for PSI alone and is not part of PartnerFeatures.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints

from services.core.errors import ValidationError
from services.core.parsing import iso_text
from services.protocol.identity import NationalId
from services.protocol.stream_messages import PartnerFeatures

MAX_RAW_BYTES = 16 * 1024

# name -> (lowest, highest) plausible value; the order is the order of the partner's feature vector.
FEATURE_SPEC: dict[str, tuple[float, float]] = {
    "travel_bookings_12m": (0, 200),
    "flight_spend_12m": (0, 5_000_000),
    "hotel_nights_12m": (0, 366),
    "ecommerce_orders_12m": (0, 10_000),
    "luxury_spend_share": (0, 1),
    "mobile_data_gb_month": (0, 2_000),
    "utility_payment_delays_12m": (0, 365),
    "credit_inquiries_6m": (0, 500),
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_SPEC)


class FeedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    op: Literal["upsert", "delete"] = "upsert"
    partner_record_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    national_id: NationalId | None = None
    features: dict[str, float] | None = None
    updated_at: Annotated[dt.datetime, BeforeValidator(iso_text)]


@dataclass(frozen=True)
class PartnerRecord:
    features: PartnerFeatures | None  # None: the person is deleted from the partner's store
    partner_record_id: str
    national_id: str | None


def parse_feed(raw: bytes | None) -> PartnerRecord:
    """Bytes from the partner's feed to a validated record, or a ValidationError with the reason.

    >>> parse_feed(b'{"partner_record_id": "P1", "updated_at": "2026-11-25T09:00:00Z", "op": "delete"}').features is None
    True
    >>> parse_feed(b'[1]')
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: FeedRecord: record: Input should be a valid dictionary or instance of FeedRecord
    """
    if raw is None:
        raise ValidationError("empty message (null value)", reason="empty")
    if len(raw) > MAX_RAW_BYTES:
        raise ValidationError(f"record of {len(raw)} bytes exceeds {MAX_RAW_BYTES}", reason="too_large")
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not valid UTF-8: {exc.reason} at byte {exc.start}", reason="bad_encoding") from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON: {exc}", reason="bad_json") from exc
    try:
        record = FeedRecord.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        raise ValidationError(f"FeedRecord: {problems}", reason="schema") from exc
    if record.updated_at.tzinfo is None:
        raise ValidationError("updated_at has no time zone", reason="naive_timestamp")
    if record.op == "delete":
        return PartnerRecord(None, record.partner_record_id, record.national_id)
    if record.national_id is None or record.features is None:
        raise ValidationError("an upsert needs national_id and features", reason="schema")
    _check_features(record.features)
    updated_at_ms = int(record.updated_at.timestamp() * 1000)
    features = PartnerFeatures(record.partner_record_id, {name: float(record.features[name]) for name in FEATURE_NAMES},
                               updated_at_ms)
    return PartnerRecord(features, record.partner_record_id, record.national_id)


def _check_features(features: dict[str, float]) -> None:
    missing = [name for name in FEATURE_NAMES if name not in features]
    unknown = sorted(set(features) - set(FEATURE_SPEC))
    if missing or unknown:
        raise ValidationError(f"features missing {missing} unknown {unknown}", reason="schema")
    for name, (lowest, highest) in FEATURE_SPEC.items():
        value = features[name]
        if not math.isfinite(value) or not lowest <= value <= highest:
            raise ValidationError(f"feature {name}={value!r} outside [{lowest}, {highest}]", reason="bad_value")


def feature_vector(features: PartnerFeatures) -> list[float]:
    return [features.features[name] for name in FEATURE_NAMES]
