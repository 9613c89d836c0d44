"""One contract, one set of checks, every model: bank-only LR (ProductModel), federated LR (both
parties in one process through the codec; plaintext and Paillier), SecureBoost (likewise, on the
plaintext protocol path, which grows the very trees real Paillier grows:
tests/federation/test_secureboost_protocol.py) and the style segmenter.

Each check runs on every model (river's `check_learn_one` idea): it learns from a labelled stream
and beats chance on held-out rows; the same seed gives the same model; the checkpoint bytes give
back a model that predicts, and goes on learning, exactly the same; malformed input (wrong feature
names, a value that is not a number, NaN where the model takes no missing values, a label other than 0 or 1) is refused with an error
that names it, and leaves the model as it was; `learn_one` leaves its input unchanged; the one and
the many verbs agree."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from services.core.errors import ValidationError
from services.models.bank_features import FEATURE_NAMES
from services.models.contract import BAD_LABEL, NOT_A_NUMBER, WRONG_FEATURES, Classifier, Clusterer
from services.models.fedlr_model import FederatedLR
from services.models.secureboost import BoostingParameters
from services.models.secureboost_model import SecureBoostModel
from services.models.segmenter import Segmenter
from services.scoring.model import ProductModel
from tests.models.style_data import mixed_stream

BANK_COLUMNS, PARTNER_COLUMNS = ("b_income", "b_tenure", "b_balance"), ("p_travel", "p_orders", "p_delays")


def labelled(names: tuple[str, ...], rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows over `names`, half of the columns carrying the signal, labels drawn from a logistic truth."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(names)))
    weights = np.where(np.arange(len(names)) % 2 == 0, 1.2, 0.0)
    y = rng.random(rows) < 1 / (1 + np.exp(-(X @ weights - 0.5)))
    return X, y


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], Classifier | Clusterer]  # seed -> a new model
    stream: Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (rows, seed) -> rows, labels (clusterers: kinds)
    clusterer: bool = False
    missing: bool = False  # the model takes NaN as a missing value (others refuse it)

    def trained(self, seed: int = 0, rows: int = 1200) -> tuple[Classifier | Clusterer, np.ndarray, np.ndarray]:
        """A model that learned `rows` rows one by one, and held-out rows with their labels."""
        model = self.make(seed)
        X, y = self.stream(rows + 400, seed)
        for row, label in zip(X[:rows], y[:rows]):
            learn_one(model, row, label)
        return model, X[rows:], y[rows:]


def _row(model: Classifier | Clusterer, row: np.ndarray) -> dict[str, float]:
    return dict(zip(model.feature_names, row.tolist()))


def learn_one(model: Classifier | Clusterer, row: np.ndarray, label: object) -> None:
    _learn_row(model, _row(model, row), label)


def _learn_row(model: Classifier | Clusterer, row: dict[str, object], label: object) -> None:
    """learn_one as each kind takes it: a clusterer without the label."""
    if isinstance(model, Clusterer) and not isinstance(model, Classifier):
        model.learn_one(row)  # type: ignore[arg-type]
    else:
        model.learn_one(row, label)  # type: ignore[call-arg, arg-type]


def learn_many(model: Classifier | Clusterer, X: np.ndarray, y: np.ndarray) -> None:
    if isinstance(model, Clusterer) and not isinstance(model, Classifier):
        model.learn_many(X)
    else:
        model.learn_many(X, y)  # type: ignore[call-arg]


def predict_many(model: Classifier | Clusterer, X: np.ndarray) -> np.ndarray:
    return model.predict_proba_many(X) if isinstance(model, Classifier) else model.predict_many(X)


CASES = [
    Case("bank_only_lr", lambda seed: ProductModel("credit_card"), lambda rows, seed: labelled(FEATURE_NAMES, rows, seed)),
    Case("federated_lr", lambda seed: FederatedLR(BANK_COLUMNS, PARTNER_COLUMNS, epochs=3, batch_size=100, seed=seed),
         lambda rows, seed: labelled(BANK_COLUMNS + PARTNER_COLUMNS, rows, seed)),
    Case("federated_lr_paillier", lambda seed: FederatedLR(BANK_COLUMNS, PARTNER_COLUMNS, epochs=1, batch_size=200,
                                                           window=400, encrypted=True, seed=seed),
         lambda rows, seed: labelled(BANK_COLUMNS + PARTNER_COLUMNS, rows, seed)),
    Case("secureboost", lambda seed: SecureBoostModel(BANK_COLUMNS, PARTNER_COLUMNS, BoostingParameters(trees=10, depth=3),
                                                      window=400, seed=seed),
         lambda rows, seed: labelled(BANK_COLUMNS + PARTNER_COLUMNS, rows, seed), missing=True),
    Case("style_segmenter", lambda seed: Segmenter(n_types=4, seed=seed),
         lambda rows, seed: mixed_stream(["young_digital", "affluent_saver", "traveller", "family_borrower"], rows, seed),
         clusterer=True),
]
by_name = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
classifiers = pytest.mark.parametrize("case", [case for case in CASES if not case.clusterer],
                                      ids=[case.name for case in CASES if not case.clusterer])


@by_name
def test_implements_the_contract(case: Case) -> None:
    model = case.make(0)
    assert isinstance(model, Clusterer if case.clusterer else Classifier)
    assert len(model.feature_names) == len(set(model.feature_names)) > 0


@by_name
def test_learns_from_a_labelled_stream_and_beats_chance_on_held_out_rows(case: Case) -> None:
    model, X, y = case.trained()
    predicted = predict_many(model, X)
    if case.clusterer:
        assert adjusted_rand_score(y, predicted) > 0.8  # chance: 0
    else:
        assert roc_auc_score(y, predicted) > 0.75  # chance: 0.5
    batch_model = case.make(0)
    train_X, train_y = case.stream(1200, 1)
    learn_many(batch_model, train_X, train_y)
    again = predict_many(batch_model, X)
    assert adjusted_rand_score(y, again) > 0.8 if case.clusterer else roc_auc_score(y, again) > 0.75


@by_name
def test_the_same_seed_and_stream_give_the_same_model(case: Case) -> None:
    first, X, _ = case.trained(seed=3, rows=600)
    second, _, _ = case.trained(seed=3, rows=600)
    assert np.array_equal(predict_many(first, X), predict_many(second, X))


@by_name
def test_the_checkpoint_bytes_give_back_a_model_that_predicts_and_learns_the_same(case: Case) -> None:
    model, X, _ = case.trained(rows=600)
    restored = type(model).from_bytes(model.to_bytes())
    assert type(restored) is type(model) and np.array_equal(predict_many(restored, X), predict_many(model, X))
    more_X, more_y = case.stream(400, 7)
    for target in (model, restored):
        learn_many(target, more_X, more_y)
    assert np.array_equal(predict_many(restored, X), predict_many(model, X))


@by_name
def test_rows_with_the_wrong_feature_names_are_refused_and_teach_nothing(case: Case) -> None:
    model, X, y = case.trained(rows=600)
    before = predict_many(model, X)
    names = model.feature_names
    missing = dict(list(_row(model, X[0]).items())[1:])
    extra = {**_row(model, X[0]), "shoe_size": 42.0}
    for row, named in ((missing, names[0]), (extra, "shoe_size")):
        with pytest.raises(ValidationError, match=named) as refused:
            _learn_row(model, row, True)  # type: ignore[arg-type]
        assert refused.value.reason == WRONG_FEATURES
        with pytest.raises(ValidationError, match=named):
            model.predict_one(row) if case.clusterer else model.predict_proba_one(row)  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match=f"rows must be a .rows, {len(names)}. matrix") as refused:
        learn_many(model, X[:, 1:], y)
    assert refused.value.reason == WRONG_FEATURES
    with pytest.raises(ValidationError):
        predict_many(model, X[:, 1:])
    with pytest.raises(ValidationError, match="must map feature names"):
        _learn_row(model, X[0].tolist(), True)  # type: ignore[arg-type]
    assert np.array_equal(predict_many(model, X), before)


@by_name
def test_values_that_are_not_finite_numbers_are_refused_naming_the_feature(case: Case) -> None:
    model, X, y = case.trained(rows=600)
    before = predict_many(model, X)
    name = model.feature_names[1]
    for bad in (float("inf"), "12", None, *(() if case.missing else (float("nan"),))):
        row = {**_row(model, X[0]), name: bad}
        with pytest.raises(ValidationError, match=repr(name)) as refused:
            _learn_row(model, row, False)
        assert refused.value.reason == NOT_A_NUMBER
    broken = X.copy()
    broken[5, 1] = np.inf if case.missing else np.nan
    with pytest.raises(ValidationError, match=f"row 5, feature {name!r} is (nan|inf)") as refused:
        learn_many(model, broken, y)
    assert refused.value.reason == NOT_A_NUMBER
    assert np.array_equal(predict_many(model, X), before)  # row 5 spoilt the batch: rows 0 to 4 were not learned either
    if case.missing:  # NaN is a missing value: scored, and learned from
        gaps = X.copy()
        gaps[::3, 1] = np.nan
        assert np.isfinite(predict_many(model, gaps)).all()
        learn_many(model, gaps, y)
        assert np.isfinite(predict_many(model, gaps)).all()


@classifiers
def test_labels_other_than_0_and_1_are_refused(case: Case) -> None:
    model, X, y = case.trained(rows=600)
    before = predict_many(model, X)
    for label in (2, -1, 0.5, "yes", None):
        with pytest.raises(ValidationError, match="label must be 0 or 1") as refused:
            model.learn_one(_row(model, X[0]), label)  # type: ignore[call-arg, arg-type]
        assert refused.value.reason == BAD_LABEL
    labels = y.astype(int)
    labels[3] = 2
    with pytest.raises(ValidationError, match="row 3: a label must be 0 or 1"):
        learn_many(model, X, labels)
    with pytest.raises(ValidationError, match="labels for"):
        learn_many(model, X, y[:-1])
    assert np.array_equal(predict_many(model, X), before)


@by_name
def test_learn_one_leaves_its_input_unchanged(case: Case) -> None:
    model, X, y = case.trained(rows=300)
    row = _row(model, X[0])
    kept = copy.deepcopy(row)
    _learn_row(model, row, bool(y[0]))
    assert row == kept


@by_name
def test_the_one_and_the_many_verbs_agree(case: Case) -> None:
    model, X, _ = case.trained(rows=600)
    many = predict_many(model, X[:50])
    if case.clusterer:
        assert [model.predict_one(_row(model, row)) for row in X[:50]] == many.tolist()  # type: ignore[union-attr]
    else:
        one = [model.predict_proba_one(_row(model, row)) for row in X[:50]]  # type: ignore[union-attr]
        assert all(set(p) == {False, True} and abs(p[False] + p[True] - 1) < 1e-12 for p in one)
        assert np.allclose([p[True] for p in one], many, atol=1e-12)
