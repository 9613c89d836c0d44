"""Customers of a few known kinds as style vectors, in the units scoring feeds the segmenter
(ages in years, money as log1p of major units, shares of events, propensities as log-odds)."""
from __future__ import annotations

import math

import numpy as np

from services.models.segmenter import STYLE_FEATURES


def _log_odds(p: float) -> float:
    return math.log(p / (1 - p))


# Each kind: the features that set it apart; everything else is the population's usual value.
USUAL: dict[str, float] = {
    "age": 42, "tenure_years": 8, "log_monthly_income": math.log1p(9_000), "log_balance": math.log1p(40_000),
    "products_held_count": 2, "log_event_amount": math.log1p(300),
    **{name: 1 / 7 for name in STYLE_FEATURES if name.startswith("share_")},
    **{name: _log_odds(0.04) for name in STYLE_FEATURES if name.startswith("affinity_")},
}
KINDS: dict[str, dict[str, float]] = {
    "young_digital": {"age": 24, "tenure_years": 2, "share_app_login": 0.7, "share_card_spend": 0.2,
                      "log_balance": math.log1p(3_000), "affinity_credit_card": _log_odds(0.2)},
    "affluent_saver": {"age": 55, "log_monthly_income": math.log1p(60_000), "log_balance": math.log1p(900_000),
                       "share_large_deposit": 0.4, "holds_wealth_fund": 1, "affinity_wealth_fund": _log_odds(0.25)},
    "traveller": {"age": 35, "share_card_spend_abroad": 0.6, "log_event_amount": math.log1p(2_500),
                  "affinity_travel_insurance": _log_odds(0.3)},
    "family_borrower": {"age": 38, "holds_mortgage": 1, "holds_personal_loan": 1, "share_transfer_out": 0.5,
                        "affinity_personal_loan": _log_odds(0.15), "products_held_count": 4},
}
# How far one customer strays from their kind, per feature, in the feature's own units.
SPREAD: dict[str, float] = {"age": 4, "tenure_years": 1.5, "products_held_count": 0.5}


def customers_of(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` style vectors of one kind (flags stay 0/1, shares in [0, 1])."""
    centre = np.array([KINDS[kind].get(name, USUAL.get(name, 0.0)) for name in STYLE_FEATURES])
    spread = np.array([SPREAD.get(name, 0.03 if name.startswith(("share_", "holds_")) else 0.15)
                       for name in STYLE_FEATURES])
    rows = centre + rng.normal(size=(count, len(STYLE_FEATURES))) * spread
    for column, name in enumerate(STYLE_FEATURES):
        if name.startswith("holds_"):
            rows[:, column] = centre[column]
        elif name.startswith("share_"):
            rows[:, column] = np.clip(rows[:, column], 0, 1)
    return rows


def mixed_stream(kinds: list[str], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` customers drawn evenly from `kinds`, shuffled; and each one's kind index."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(kinds), size=count)
    rows = np.empty((count, len(STYLE_FEATURES)))
    for index, kind in enumerate(kinds):
        rows[labels == index] = customers_of(kind, int((labels == index).sum()), rng)
    return rows, labels
