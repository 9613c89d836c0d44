"""The bank's labelled history for federated training: one past contact per customer for a product.

Each row is the customer's bank features at the time (their profile and an app login) and whether
they converted, drawn from the simulator's ground truth at a pilot campaign's response rate
(`uplift` times the everyday propensity), so a few hundred customers give enough positives.
"""
from __future__ import annotations

import datetime as dt
import random

from demo.generator.population import SyntheticCustomer
from services.exchange.training import LabelledRow
from services.models.bank_features import feature_vector
from services.protocol.stream_messages import CustomerEvent, CustomerProfile

HISTORY_DAY = dt.date(2026, 10, 1)


def profile_of(customer: SyntheticCustomer, day: dt.date = HISTORY_DAY) -> CustomerProfile:
    tenure = (day.year - customer.opened_at.year) * 12 + day.month - customer.opened_at.month
    return CustomerProfile(
        customer.customer_id, customer.age_on(day), max(0, tenure), round(customer.monthly_income * 100),
        round(customer.balance * 100), tuple(sorted(set(customer.products))), customer.segment,
        customer.preferred_channel, customer.timezone, customer.consent_marketing, 0)


def campaign_history(customers: list[SyntheticCustomer], product: str, uplift: float = 4.0,
                     seed: int = 23) -> list[LabelledRow]:
    rng = random.Random(seed)
    rows = []
    for customer in customers:
        event = CustomerEvent(f"history:{customer.customer_id}", customer.customer_id, "app_login", 0, "", None,
                              0, 0, "history", 0, 0)
        converted = rng.random() < min(0.9, uplift * customer.true_propensity(product, HISTORY_DAY))
        rows.append(LabelledRow(customer.customer_id, feature_vector(event, profile_of(customer)), int(converted)))
    return rows
