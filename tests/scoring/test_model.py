"""The contract every model honours (river's check_learn_one in spirit), and the vectorised
snapshot agreeing with river itself."""
from __future__ import annotations

import pickle

import numpy as np

from services.models.bank_features import FEATURE_NAMES
from services.scoring.model import PRIOR_CONVERSION_RATE, ProductModel, top_reasons


def _examples(count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, len(FEATURE_NAMES))) * 3 + 10
    labels = (features[:, 0] + rng.normal(size=count) > 10.5)
    return features, labels


def test_learn_leaves_its_input_unchanged() -> None:
    model = ProductModel("credit_card")
    features, labels = _examples(5)
    before = features.copy()
    for row, label in zip(features, labels):
        model.learn(row, bool(label))
    assert np.array_equal(features, before)


def test_cold_model_predicts_the_prior() -> None:
    propensities, _ = ProductModel("credit_card").predict_batch(_examples(4)[0])
    assert np.allclose(propensities, PRIOR_CONVERSION_RATE)


def test_vectorised_snapshot_matches_river_predict_proba_one() -> None:
    model = ProductModel("wealth_fund")
    features, labels = _examples(300)
    for row, label in zip(features, labels):
        model.learn(row, bool(label))
    propensities, _ = model.predict_batch(features[:20])
    for row, propensity in zip(features[:20], propensities):
        river_probability = model.pipeline.predict_proba_one(dict(zip(FEATURE_NAMES, row.tolist())))[True]
        assert abs(river_probability - propensity) < 1e-9
    assert np.all((propensities > 0) & (propensities < 1))


def test_pickled_model_predicts_the_same() -> None:
    model = ProductModel("mortgage")
    features, labels = _examples(50)
    for row, label in zip(features, labels):
        model.learn(row, bool(label))
    restored = ProductModel.from_bytes(model.to_bytes())
    assert np.array_equal(restored.predict_batch(features)[0], model.predict_batch(features)[0])
    assert restored.rows_learned == 50


def test_model_learns_the_signal_it_is_shown() -> None:
    model = ProductModel("credit_card")
    features, labels = _examples(2000)
    for row, label in zip(features, labels):
        model.learn(row, bool(label))
    assert model.auc.get() > 0.75
    reasons = top_reasons(model.contributions(features[:1])[0])
    assert len(reasons) == 3


def test_checkpoint_refuses_foreign_objects() -> None:
    import pytest

    with pytest.raises(TypeError):
        ProductModel.from_bytes(pickle.dumps({"not": "a model"}))


def test_batch_reason_codes_equal_the_per_row_ones() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from services.scoring.model import top_reasons_batch

    @settings(max_examples=50, deadline=None)
    @given(arrays(np.float64, st.tuples(st.integers(1, 6), st.just(len(FEATURE_NAMES))),
                  elements=st.floats(-100, 100, allow_nan=False).map(lambda value: round(value, 3)), unique=True))
    def agree(contributions: np.ndarray) -> None:
        assert [[(r.feature, r.contribution) for r in reasons] for reasons in top_reasons_batch(contributions)] == \
            [top_reasons(row) for row in contributions]

    agree()
