"""The partner's synthetic feed: what a travel-and-telecom data partner knows about people.

The partner holds a share of the bank's customers (same national ids, its own record ids) and
people the bank does not have. Its features carry signal about the hidden travel affinity and
income, which the bank's own data shows only faintly, so federated models have something to gain.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections.abc import Iterator

from demo.generator.population import SyntheticCustomer, make_population


def _features(customer: SyntheticCustomer, rng: random.Random) -> dict[str, float]:
    affinity = customer.travel_affinity
    income = math.log1p(customer.monthly_income) - 9.5
    return {
        "travel_bookings_12m": float(min(200, round(rng.expovariate(1 / (0.5 + 12 * affinity))))),
        "flight_spend_12m": round(min(5e6, max(0.0, rng.gauss(20000 * affinity * math.exp(0.5 * income), 3000))), 2),
        "hotel_nights_12m": float(min(366, round(rng.expovariate(1 / (0.3 + 20 * affinity))))),
        "ecommerce_orders_12m": float(min(10_000, round(rng.expovariate(1 / (30 + 20 * max(income, -1)))))),
        "luxury_spend_share": round(min(1.0, max(0.0, rng.gauss(0.1 + 0.1 * income, 0.05))), 4),
        "mobile_data_gb_month": round(min(2000.0, rng.lognormvariate(2.5, 0.6)), 2),
        "utility_payment_delays_12m": float(min(365, round(rng.expovariate(1 / (1 + max(0.0, -income) * 3))))),
        "credit_inquiries_6m": float(min(500, round(rng.expovariate(1 / (0.5 + (customer.segment == "family")))))),
    }


def partner_records(customers: list[SyntheticCustomer], overlap: float = 0.7, outsiders: int | None = None,
                    seed: int = 17, at: dt.datetime | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The partner's feed records: `overlap` of the bank's customers plus `outsiders` others."""
    rng = random.Random(seed)
    at = at or dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
    shared = [customer for customer in customers if rng.random() < overlap]
    others = make_population(len(customers) // 3 if outsiders is None else outsiders, seed=seed + 1000)
    bank_ids = {customer.national_id for customer in customers}
    people = shared + [other for other in others if other.national_id not in bank_ids]
    rng.shuffle(people)
    for index, person in enumerate(people):
        record_id = f"P{index:08d}"
        yield record_id.encode(), json.dumps({
            "op": "upsert", "partner_record_id": record_id, "national_id": person.national_id,
            "features": _features(person, rng), "updated_at": at.isoformat().replace("+00:00", "Z"),
        }).encode()
