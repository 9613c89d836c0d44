"""A stand-in for the bank's channels in the demo: reads offers, sends back responses.

Delivery always succeeds; the customer converts with their hidden true propensity, opts out
rarely, and otherwise ignores the offer. Seeded per offer id, so a replay answers the same way.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random

from demo.generator.population import SyntheticCustomer
from services.protocol.stream_messages import Offer, OfferResponse, Suppression

OPT_OUT_RATE = 0.01
OFFER_LIFT = 1.5  # an offer makes a conversion this much likelier than no offer (the simulated truth)


def respond(offer: Offer, customer: SyntheticCustomer, occurred_at_ms: int, today: dt.date) -> list[OfferResponse]:
    """The responses a channel sends for one offer: delivered, then converted, opted_out or ignored."""
    rng = random.Random(int(hashlib.sha256(offer.offer_id.encode()).hexdigest()[:16], 16))
    draw = rng.random()
    propensity = customer.true_propensity(offer.product, today)
    outcome = "converted" if draw < propensity else ("opted_out" if draw > 1 - OPT_OUT_RATE else "ignored")
    return [
        OfferResponse(f"{offer.offer_id}:{kind}", offer.offer_id, offer.event_id, offer.customer_id, offer.campaign_id,
                      offer.product, offer.channel, kind, occurred_at_ms)  # type: ignore[arg-type]
        for kind in ("delivered", outcome)
    ]


def organic(suppression: Suppression, customer: SyntheticCustomer, products: dict[str, str], occurred_at_ms: int,
            today: dt.date) -> list[OfferResponse]:
    """A holdout customer converting on their own, as the bank's product feed would report it: at
    the true propensity without the offer's nudge, which is what uplift measures against."""
    if suppression.reason != "holdout" or suppression.campaign_id not in products:
        return []
    product = products[suppression.campaign_id]
    rng = random.Random(int(hashlib.sha256(f"organic|{suppression.event_id}".encode()).hexdigest()[:16], 16))
    if rng.random() >= customer.true_propensity(product, today) / OFFER_LIFT:
        return []
    return [OfferResponse(f"organic:{suppression.event_id}", "", suppression.event_id, suppression.customer_id,
                          suppression.campaign_id, product, "none", "converted", occurred_at_ms)]
