"""The bank's federated half applies its own preparation at scoring time and reads older checkpoints."""
from __future__ import annotations

import json

import numpy as np

from services.models.bank_features import FEATURE_NAMES
from services.models.federated import BankHalf
from services.models.preparation import Preparation


def history(rows: int = 500) -> np.ndarray:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(rows, len(FEATURE_NAMES)))
    features[:, FEATURE_NAMES.index("log_balance")] = rng.lognormal(9, 1.4, rows)  # raw amounts, heavy-tailed
    features[rng.random(rows) < 0.2, FEATURE_NAMES.index("age")] = np.nan
    features[:, FEATURE_NAMES.index("trigger_other")] = 0.0  # constant in the history
    return features


def test_contributions_are_per_bank_feature_and_add_up_to_the_log_odds_share() -> None:
    raw = history()
    preparation = Preparation.fit(raw)
    weights = np.linspace(-1, 1, preparation.outputs)
    half = BankHalf("travel_insurance", weights, preparation, -0.5, "fedlr.travel_insurance@x")
    contributions = half.contributions(raw[:7], np.full(7, 0.25))
    assert contributions.shape == (7, len(FEATURE_NAMES) + 1)
    assert np.allclose(contributions[:, :-1].sum(axis=1), preparation.transform(raw[:7]) @ weights)
    assert (contributions[:, FEATURE_NAMES.index("trigger_other")] == 0).all()  # dropped: no share
    assert np.isfinite(half.propensities(contributions)).all()


def test_a_missing_value_at_scoring_time_is_imputed_as_in_training() -> None:
    raw = history()
    half = BankHalf("travel_insurance", np.ones(Preparation.fit(raw).outputs), Preparation.fit(raw), 0.0, "v")
    row = raw[:1].copy()
    row[0, FEATURE_NAMES.index("age")] = np.nan
    imputed = row.copy()
    imputed[0, FEATURE_NAMES.index("age")] = np.nanmedian(raw[:, FEATURE_NAMES.index("age")])
    age_indicator = [j for j, s in enumerate(half.preparation.sources) if s == FEATURE_NAMES.index("age")
                     and half.preparation.indicator[j]]
    assert age_indicator  # 20 % missing: the gap itself is a feature
    gap, filled = half.contributions(row, np.zeros(1)), half.contributions(imputed, np.zeros(1))
    others = [i for i in range(len(FEATURE_NAMES)) if i != FEATURE_NAMES.index("age")]
    assert np.allclose(gap[0, others], filled[0, others]) and gap[0, FEATURE_NAMES.index("age")] != filled[
        0, FEATURE_NAMES.index("age")]


def test_the_checkpoint_round_trips_and_an_older_one_reads_as_its_standardisation() -> None:
    raw = history()
    preparation = Preparation.fit(raw)
    half = BankHalf("travel_insurance", np.linspace(0, 1, preparation.outputs), preparation, 0.3, "v9")
    restored = BankHalf.from_bytes(half.to_bytes())
    assert np.array_equal(restored.contributions(raw, np.zeros(len(raw))), half.contributions(raw, np.zeros(len(raw))))
    mean, scale = np.full(len(FEATURE_NAMES), 2.0), np.full(len(FEATURE_NAMES), 4.0)
    older = {"product": "travel_insurance", "weights": [0.5] * len(FEATURE_NAMES), "mean": mean.tolist(),
             "scale": scale.tolist(), "intercept": -1.0, "partner_version": "v1", "features": list(FEATURE_NAMES)}
    legacy = BankHalf.from_bytes(json.dumps(older).encode())
    row = np.arange(len(FEATURE_NAMES), dtype=np.float64)[None, :]
    assert np.allclose(legacy.contributions(row, np.zeros(1))[0, :-1], 0.5 * (row[0] - mean) / scale)
