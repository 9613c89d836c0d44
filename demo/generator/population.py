"""Synthetic bank customers for the demo and tests: realistic shapes, no real person in them.

Each customer has a hidden "true" propensity per product (a logistic function of their
attributes) that the channel simulator uses to decide conversions, so the online models have
something real to learn. Everything is seeded: the same seed gives the same population.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from services.models.bank_features import PRODUCTS

SEGMENTS = ("young_professional", "affluent", "family", "retiree", "student")
CHANNEL_PREFERENCE = ("push", "sms", "email", "wechat", "callcentre")
TIME_ZONES = ("Asia/Shanghai",) * 8 + ("Asia/Hong_Kong", "Europe/London")
ABROAD = ("JP", "TH", "FR", "US", "SG", "GB")
HOME_COUNTRY = "CN"


@dataclass(frozen=True)
class SyntheticCustomer:
    customer_id: str
    national_id: str  # the identifier both parties know; only ever used hashed, inside PSI
    birth_date: dt.date
    opened_at: dt.date
    monthly_income: float
    balance: float
    products: tuple[str, ...]
    segment: str
    preferred_channel: str
    timezone: str
    consent_marketing: bool
    travel_affinity: float  # hidden; the partner's features carry signal about it

    def age_on(self, day: dt.date) -> int:
        return day.year - self.birth_date.year - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))

    def true_propensity(self, product: str, today: dt.date) -> float:
        """The ground truth the simulator converts with; the models never see this function."""
        age = self.age_on(today)
        income = math.log1p(self.monthly_income) - 9.5
        held = product in self.products
        base = {
            "credit_card": -3.0 + 0.6 * income - 0.02 * (age - 35) + 0.8 * (self.segment == "young_professional"),
            "wealth_fund": -3.4 + 1.0 * income + 0.9 * (self.segment == "affluent") + 0.02 * (age - 35),
            # Borrowers: families, and whoever's savings are thin against their income.
            "personal_loan": -3.0 - 0.3 * income + 0.7 * (self.segment == "family")
            - 0.6 * math.log(max(self.balance, 1.0) / max(self.monthly_income, 1.0)),
            "travel_insurance": -3.2 + 2.2 * self.travel_affinity + 0.4 * income,
            "mortgage": -3.6 + 0.8 * income + 1.0 * (self.segment == "family") - 0.04 * abs(age - 38),
        }[product]
        return 1 / (1 + math.exp(-(base - (2.5 if held else 0.0))))


def make_population(size: int, seed: int = 7, today: dt.date | None = None) -> list[SyntheticCustomer]:
    today = today or dt.date(2026, 11, 25)
    rng = random.Random(seed)
    customers = []
    for index in range(size):
        segment = rng.choices(SEGMENTS, weights=(30, 15, 30, 15, 10))[0]
        age = {"student": rng.randint(18, 24), "retiree": rng.randint(60, 85)}.get(segment, rng.randint(24, 60))
        income = rng.lognormvariate(9.3 + (0.9 if segment == "affluent" else 0) - (1.0 if segment == "student" else 0), 0.5)
        customers.append(SyntheticCustomer(
            customer_id=f"C{index:07d}",
            national_id=(f"{rng.randint(110000, 659999)}{rng.randint(1940, 2007)}{rng.randint(1, 12):02d}"
                         f"{rng.randint(1, 28):02d}{rng.randint(0, 9999):04d}"),
            birth_date=dt.date(today.year - age, rng.randint(1, 12), rng.randint(1, 28)),
            opened_at=today - dt.timedelta(days=rng.randint(30, 365 * 20)),
            monthly_income=round(income, 2), balance=round(income * rng.uniform(0.5, 12), 2),
            products=(*sorted(rng.sample(PRODUCTS, rng.randint(0, 2))), "debit_card"),
            segment=segment, preferred_channel=rng.choices(CHANNEL_PREFERENCE, weights=(40, 25, 10, 20, 5))[0],
            timezone=rng.choice(TIME_ZONES), consent_marketing=rng.random() < 0.9,
            travel_affinity=rng.betavariate(2, 5),
        ))
    return customers


def _cdc(table: str, after: dict[str, object], ts_ms: int, op: str = "c") -> bytes:
    return json.dumps({"op": op, "source": {"table": table, "ts_ms": ts_ms}, "after": after}).encode()


def customer_records(customers: list[SyntheticCustomer], ts_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """One `customers` CDC row per customer, keyed by customer id."""
    for customer in customers:
        yield customer.customer_id.encode(), _cdc("customers", {
            "customer_id": customer.customer_id, "birth_date": customer.birth_date.isoformat(),
            "opened_at": customer.opened_at.isoformat(), "monthly_income": f"{customer.monthly_income:.2f}",
            "balance": f"{customer.balance:.2f}", "products": list(customer.products), "segment": customer.segment,
            "preferred_channel": customer.preferred_channel, "timezone": customer.timezone,
            "consent_marketing": customer.consent_marketing, "national_id": customer.national_id,
        }, ts_ms)


def event_records(customers: list[SyntheticCustomer], count: int, seed: int = 11,
                  start: dt.datetime | None = None) -> Iterator[tuple[bytes, bytes]]:
    """`count` transaction and login CDC rows over customers, keyed by customer id."""
    rng = random.Random(seed)
    start = start or dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    for index in range(count):
        customer = rng.choice(customers)
        at = (start + dt.timedelta(seconds=index)).isoformat().replace("+00:00", "Z")
        kind = rng.choices(("salary", "deposit", "card", "abroad", "transfer", "login"), weights=(12, 8, 30, 8, 12, 30))[0]
        ts_ms = int((start + dt.timedelta(seconds=index)).timestamp() * 1000)
        if kind == "login":
            login = {"login_id": f"L{seed}-{index}", "customer_id": customer.customer_id, "at": at, "device": "app"}
            yield customer.customer_id.encode(), _cdc("logins", login, ts_ms)
            continue
        amount = {"salary": customer.monthly_income, "deposit": customer.balance * rng.uniform(0.1, 2.0),
                  "card": rng.lognormvariate(5, 1), "abroad": rng.lognormvariate(6, 1),
                  "transfer": rng.lognormvariate(7, 1)}[kind]
        yield customer.customer_id.encode(), _cdc("transactions", {
            "txn_id": f"T{seed}-{index}", "customer_id": customer.customer_id,
            "kind": "card" if kind == "abroad" else kind, "amount": f"{amount:.2f}", "currency": "CNY",
            "country": rng.choice(ABROAD) if kind == "abroad" else HOME_COUNTRY, "booked_at": at,
        }, ts_ms)


def malformed_records(count: int, seed: int = 13) -> Iterator[tuple[bytes, bytes]]:
    """Broken input of the kinds a real feed produces: truncated JSON, bad encoding, missing fields."""
    rng = random.Random(seed)
    kinds = [
        b'{"op": "c", "source": {"table": "transactions", "ts_ms": 1}, "after": {"txn_id": "X"',
        b"\xff\xfe not utf-8",
        b'{"op": "c", "source": {"table": "transactions", "ts_ms": 1}, "after": {"txn_id": "X", "customer_id": "C0000001"}}',
        b'{"op": "c", "source": {"table": "ledger", "ts_ms": 1}, "after": {}}',
        b'{"op": "c", "source": {"table": "transactions", "ts_ms": 1}, "after": {"txn_id": "X", "customer_id": "C0000001", '
        b'"kind": "card", "amount": "1e400", "currency": "CNY", "booked_at": "2026-11-25T09:00:00Z"}}',
    ]
    for index in range(count):
        yield f"bad-{index}".encode(), kinds[rng.randrange(len(kinds))]
