"""The bank's history as the simulator makes it: past campaigns and who converted.

`campaign_contacts` is a campaign-response export (services/models/history.py) of six months of
monthly campaigns for every product, each fired by the triggers its campaign in
services/dispatch/campaigns.yaml uses; a customer is reached by about half of a product's
campaigns and converts with the simulator's ground truth (`true_propensity`, the same as the
channels answer live offers with), so the products differ in who converts and why.

`campaign_history` is the older single-product form the federated training tests use: one
contact per customer, an app login, at a pilot campaign's response rate (`uplift` times the
everyday propensity), so a few hundred customers give enough positives.
"""
from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal

from demo.generator.population import SyntheticCustomer
from services.exchange.training import LabelledRow
from services.models.bank_features import PRODUCTS, feature_vector
from services.models.history import Contact
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, EventType

HISTORY_DAY = dt.date(2026, 10, 1)
# The months of past campaigns in the export, and the triggers each product's campaigns used.
HISTORY_MONTHS: tuple[dt.date, ...] = (*(dt.date(2025, month, 1) for month in range(11, 13)),
                                       *(dt.date(2026, month, 1) for month in range(1, 11)))
PRODUCT_TRIGGERS: dict[str, tuple[EventType, ...]] = {
    "credit_card": ("salary_credit", "app_login", "card_spend"),
    "wealth_fund": ("salary_credit", "large_deposit"),
    "personal_loan": ("app_login", "transfer_out"),
    "travel_insurance": ("card_spend_abroad",),
    "mortgage": ("large_deposit",),
}
LARGE_DEPOSIT_MAJOR = 50_000  # ingest's threshold for a large_deposit trigger


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


def _amount(customer: SyntheticCustomer, event_type: EventType, rng: random.Random) -> Decimal:
    """The trigger's amount in major units, shaped as the live generator's events are."""
    major = {
        "salary_credit": customer.monthly_income,
        "large_deposit": max(LARGE_DEPOSIT_MAJOR, customer.balance * rng.uniform(0.1, 2.0)),
        "card_spend": rng.lognormvariate(5, 1), "card_spend_abroad": rng.lognormvariate(6, 1),
        "transfer_out": rng.lognormvariate(7, 1),
    }.get(event_type, 0.0)
    return Decimal(f"{min(major, 1e11):.2f}")


def campaign_contacts(customers: list[SyntheticCustomer], products: tuple[str, ...] = PRODUCTS, reach: float = 0.5,
                      seed: int = 29) -> Iterator[Contact]:
    """Every contact of the past campaigns, month by month, with its outcome."""
    rng = random.Random(seed)
    for month in HISTORY_MONTHS:
        for product in products:
            for customer in customers:
                if rng.random() >= reach:
                    continue
                day = month + dt.timedelta(days=rng.randrange(28))
                at = dt.datetime.combine(day, dt.time(rng.randrange(8, 21), rng.randrange(60)), dt.UTC)
                event_type = rng.choice(PRODUCT_TRIGGERS[product])
                profile = profile_of(customer, day)
                converted = rng.random() < customer.true_propensity(product, day)
                yield Contact(customer.customer_id, product, int(converted), at, profile.age, profile.tenure_months,
                              Decimal(f"{customer.monthly_income:.2f}"), Decimal(f"{customer.balance:.2f}"),
                              profile.products_held, event_type, _amount(customer, event_type, rng))

