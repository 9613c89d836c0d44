"""Core-banking CDC records (JSON) validated and normalised into canonical messages.

The feed sends one JSON object per change, Debezium-style:
`{"op": "c"|"u"|"r"|"d", "source": {"table": ..., "ts_ms": ...}, "after": {...}}` for the tables
`transactions`, `logins` and `customers`. Transactions and logins become `CustomerEvent`s;
customer rows become a `CustomerUpdate`: the profile, and the identity (national id) when the row
carries one, which goes to its own topic so that only PSI ever reads it. A delete becomes an
`Erasure`: tombstones for both.
Anything that does not fit raises ValidationError with a reason: it goes to the dead-letter topic.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from services.core.errors import ValidationError
from services.core.parsing import iso_text
from services.protocol.identity import NationalId
from services.protocol.stream_messages import CustomerEvent, CustomerIdentity, CustomerProfile

MAX_RAW_BYTES = 64 * 1024
# A deposit at or above this (in major units of the currency) is a "large deposit" trigger.
LARGE_DEPOSIT_MAJOR = Decimal("50000")
# Amounts above this are treated as corrupt: no retail transaction is a quadrillion.
MAX_AMOUNT_MAJOR = Decimal("1e12")
CustomerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Timestamp = Annotated[dt.datetime, BeforeValidator(iso_text)]
IsoDate = Annotated[dt.date, BeforeValidator(iso_text)]
EARLIEST_EVENT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_CLOCK_SKEW = dt.timedelta(days=1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Source(_Strict):
    table: Literal["transactions", "logins", "customers"]
    ts_ms: int = Field(ge=0)


class TransactionRow(_Strict):
    txn_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    customer_id: CustomerId
    kind: Literal["salary", "deposit", "card", "transfer"]
    amount: str
    currency: Currency
    country: Country | None = None
    booked_at: Timestamp


class LoginRow(_Strict):
    login_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    customer_id: CustomerId
    at: Timestamp
    device: Annotated[str, StringConstraints(max_length=64)] = "unknown"


class CustomerRow(_Strict):
    customer_id: CustomerId
    birth_date: IsoDate
    opened_at: IsoDate
    monthly_income: str
    balance: str
    products: list[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]] = Field(max_length=50)
    segment: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]
    preferred_channel: Literal["sms", "push", "email", "callcentre", "wechat"]
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    consent_marketing: bool
    national_id: NationalId | None = None


@dataclass(frozen=True)
class CustomerUpdate:
    profile: CustomerProfile
    identity: CustomerIdentity | None


@dataclass(frozen=True)
class Erasure:
    customer_id: str


class CdcRecord(_Strict):
    op: Literal["c", "u", "r", "d"]
    source: Source
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def _minor_units(amount: str, field: str) -> int:
    """Exact decimal string to minor units (cents), refusing floats' rounding and absurd values."""
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise ValidationError(f"{field} {amount!r} is not a decimal number", reason="bad_amount") from exc
    if not value.is_finite() or abs(value) > MAX_AMOUNT_MAJOR:
        raise ValidationError(f"{field} {amount!r} is out of range", reason="bad_amount")
    if value != value.quantize(Decimal("0.01")):
        raise ValidationError(f"{field} {amount!r} has more than two decimals", reason="bad_amount")
    return int(value * 100)


def _epoch_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValidationError(f"timestamp {moment.isoformat()} has no time zone", reason="naive_timestamp")
    if not EARLIEST_EVENT <= moment <= dt.datetime.now(dt.UTC) + MAX_CLOCK_SKEW:
        raise ValidationError(f"timestamp {moment.isoformat()} is implausible", reason="bad_value")
    return int(moment.timestamp() * 1000)


def parse_cdc(raw: bytes | None) -> CdcRecord:
    """Bytes from the feed to a validated CDC envelope, or a ValidationError saying what is wrong.

    >>> parse_cdc(b'{"op": "c", "source": {"table": "logins", "ts_ms": 1}, "after": {}}').source.table
    'logins'
    >>> parse_cdc(b'not json')
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: not valid JSON: Expecting value: line 1 column 1 (char 0)
    """
    if raw is None:
        raise ValidationError("empty message (null value)", reason="empty")
    if len(raw) > MAX_RAW_BYTES:
        raise ValidationError(f"record of {len(raw)} bytes exceeds {MAX_RAW_BYTES}", reason="too_large")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not valid UTF-8: {exc.reason} at byte {exc.start}", reason="bad_encoding") from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON: {exc}", reason="bad_json") from exc
    return _validate(CdcRecord, document)


def _validate(model: type[pydantic.BaseModel], document: Any) -> Any:
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'record'}: {error['msg']}" for error in exc.errors())
        raise ValidationError(f"{model.__name__}: {problems}", reason="schema") from exc


def normalise(
    record: CdcRecord, *, source_topic: str, source_partition: int, source_offset: int, received_at_ms: int,
    home_country: str,
) -> CustomerEvent | CustomerUpdate | Erasure:
    """One CDC record to the canonical message it stands for."""
    table = record.source.table
    if record.op == "d":
        if table != "customers":
            raise ValidationError(f"delete on {table} is not supported: the ledger is append-only", reason="unsupported_operation")
        row = record.before or {}
        customer_id = row.get("customer_id")
        if not isinstance(customer_id, str) or not customer_id:
            raise ValidationError("customer delete without before.customer_id", reason="schema")
        return Erasure(customer_id)
    if record.after is None:
        raise ValidationError(f"op {record.op!r} without an after image", reason="schema")
    where = {"source_topic": source_topic, "source_partition": source_partition, "source_offset": source_offset,
             "received_at_ms": received_at_ms}
    if table == "transactions":
        return _transaction_event(_validate(TransactionRow, record.after), home_country, where)
    if table == "logins":
        login = _validate(LoginRow, record.after)
        return CustomerEvent(
            event_id=f"logins:{login.login_id}", customer_id=login.customer_id, event_type="app_login", amount_minor=0,
            currency="", country=None, occurred_at_ms=_epoch_ms(login.at), **where,
        )
    row = _validate(CustomerRow, record.after)
    identity = CustomerIdentity(row.customer_id, row.national_id, record.source.ts_ms) if row.national_id else None
    return CustomerUpdate(_profile(row, record.source.ts_ms), identity)


def _transaction_event(row: TransactionRow, home_country: str, where: dict[str, Any]) -> CustomerEvent:
    amount_minor = _minor_units(row.amount, "amount")
    if row.kind == "salary":
        event_type = "salary_credit"
    elif row.kind == "deposit":
        event_type = "large_deposit" if amount_minor >= LARGE_DEPOSIT_MAJOR * 100 else "deposit"
    elif row.kind == "card":
        event_type = "card_spend_abroad" if row.country and row.country != home_country else "card_spend"
    else:
        event_type = "transfer_out"
    return CustomerEvent(
        event_id=f"transactions:{row.txn_id}", customer_id=row.customer_id, event_type=event_type,
        amount_minor=amount_minor, currency=row.currency, country=row.country,
        occurred_at_ms=_epoch_ms(row.booked_at), **where,
    )


def _profile(row: CustomerRow, updated_at_ms: int) -> CustomerProfile:
    today = dt.datetime.fromtimestamp(updated_at_ms / 1000, dt.UTC).date()
    age = today.year - row.birth_date.year - ((today.month, today.day) < (row.birth_date.month, row.birth_date.day))
    if not 16 <= age <= 120:
        raise ValidationError(f"age {age} from birth_date is implausible", reason="bad_value")
    tenure_months = max(0, (today.year - row.opened_at.year) * 12 + today.month - row.opened_at.month)
    income_minor = _minor_units(row.monthly_income, "monthly_income")
    if income_minor < 0:
        raise ValidationError("monthly_income is negative", reason="bad_amount")
    if not _is_time_zone(row.timezone):
        raise ValidationError(f"unknown time zone {row.timezone!r}", reason="bad_value")
    return CustomerProfile(
        customer_id=row.customer_id, age=age, tenure_months=tenure_months, monthly_income_minor=income_minor,
        balance_minor=_minor_units(row.balance, "balance"), products_held=tuple(sorted(set(row.products))),
        segment=row.segment, preferred_channel=row.preferred_channel, timezone=row.timezone,
        consent_marketing=row.consent_marketing, updated_at_ms=updated_at_ms,
    )


def _is_time_zone(name: str) -> bool:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


