"""A stand-in for the bank's channels in the demo: reads offers, sends back responses.

Delivery always succeeds; the customer converts with their hidden true propensity, opts out
rarely, and otherwise ignores the offer. Seeded per offer id, so a replay answers the same way.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random

from services.core.messages import Offer, OfferResponse
from services.generator.population import SyntheticCustomer

OPT_OUT_RATE = 0.01


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
