"""One model contract: the verbs every model here answers to are river's.

A classifier learns from labelled rows and gives P(y = 1); a clusterer learns from unlabelled
rows and gives a cluster id. The `*_one` verbs take one row as a mapping of feature name to value
(river's `dict`); the `*_many` verbs take a matrix whose columns are the model's `feature_names`,
in that order, where batching matters (scoring a batch of events, training a window of responses).
Unlike river's, `predict_proba_many` returns P(True) per row as a numpy vector, not a DataFrame.

| model | class | where |
| --- | --- | --- |
| bank-only LR, online, per product | `ProductModel` | services/scoring/model.py |
| federated LR, both parties in one process | `FederatedLR` | services/models/fedlr_model.py |
| federated SecureBoost, both parties in one process | `SecureBoostModel` | services/models/secureboost_model.py |
| customer style types | `Segmenter` | services/models/segmenter.py |

Every model also checkpoints itself (`to_bytes`, `from_bytes`, through `checkpoint_bytes` and
`restore_checkpoint`) for the registry, and refuses
malformed input with a `ValidationError` that names the problem: the wrong feature names, a value
that is not a finite number (NaN passes where the model takes missing values: SecureBoost), a
label other than 0 or 1. The checks are the functions below, so
every model refuses the same things the same way. tests/models/test_model_contract.py runs one
set of checks on each model.

>>> check_row({"age": 30, "income": 2.5}, ("age", "income")).tolist()
[30.0, 2.5]
>>> check_row({"age": 30}, ("age", "income"))
Traceback (most recent call last):
...
services.core.errors.ValidationError: row features do not match the model's: missing ['income']
>>> check_row({"age": float("nan"), "income": 2.5}, ("age", "income"), missing=True).tolist()
[nan, 2.5]
>>> check_label(2)
Traceback (most recent call last):
...
services.core.errors.ValidationError: a label must be 0 or 1 (or False or True), not 2
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import numpy as np

from services.core.errors import ValidationError

Row = Mapping[str, float]
WRONG_FEATURES = "wrong_features"
NOT_A_NUMBER = "not_a_number"
BAD_LABEL = "bad_label"
_M = TypeVar("_M")


@runtime_checkable
class Model(Protocol):
    """What every model has: the features it reads, in column order, and a checkpoint."""

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, checkpoint: bytes) -> Self: ...


@runtime_checkable
class Classifier(Model, Protocol):
    """A binary classifier in river's verbs."""

    def learn_one(self, x: Row, y: bool) -> None: ...

    def predict_proba_one(self, x: Row) -> dict[bool, float]: ...

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None: ...

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Clusterer(Model, Protocol):
    """An online clusterer in river's verbs; ids are ints."""

    def learn_one(self, x: Row) -> None: ...

    def predict_one(self, x: Row) -> int: ...

    def learn_many(self, X: np.ndarray) -> None: ...

    def predict_many(self, X: np.ndarray) -> np.ndarray: ...


def checkpoint_bytes(model: object) -> bytes:
    """A model's checkpoint for the registry: the model pickled."""
    return pickle.dumps(model)


def restore_checkpoint(checkpoint: bytes, cls: type[_M]) -> _M:
    """The `cls` model a checkpoint holds, or a TypeError naming what it holds instead."""
    # Only checkpoints from our own registry are ever loaded (pickle trusts its input).
    model = pickle.loads(checkpoint)  # nosec B301  # only our own registry's checkpoints
    if not isinstance(model, cls):
        raise TypeError(f"checkpoint holds {type(model).__name__}, not a {cls.__name__}")
    return model


def check_row(x: Any, feature_names: Sequence[str], *, missing: bool = False) -> np.ndarray:
    """One row as floats in `feature_names` order, or a ValidationError naming what is wrong.
    `missing`: the model handles missing values itself, so NaN is let through (never infinity)."""
    if not isinstance(x, Mapping):
        raise ValidationError(f"a row must map feature names to values, not {type(x).__name__}", reason=WRONG_FEATURES)
    if len(x) != len(feature_names) or any(name not in x for name in feature_names):
        absent = [name for name in feature_names if name not in x]
        unexpected = sorted(str(name) for name in set(x) - set(feature_names))
        problems = ([f"missing {absent}"] if absent else []) + ([f"unexpected {unexpected}"] if unexpected else [])
        raise ValidationError(f"row features do not match the model's: {', '.join(problems)}", reason=WRONG_FEATURES)
    values = []
    for name in feature_names:
        value = x[name]
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not (math.isfinite(value) or (missing and math.isnan(value))):
            raise ValidationError(f"feature {name!r} is {value!r}: every value must be a finite number"
                                  + (" or NaN (missing)" if missing else " (impute missing values before the model)"),
                                  reason=NOT_A_NUMBER)
        values.append(float(value))
    return np.array(values, dtype=np.float64)


def check_matrix(X: Any, feature_names: Sequence[str], *, missing: bool = False) -> np.ndarray:
    """Rows x features as float64, columns in `feature_names` order, every value finite (or NaN,
    with `missing`)."""
    try:
        matrix = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"rows must be numbers: {exc}", reason=NOT_A_NUMBER) from exc
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise ValidationError(f"rows must be a (rows, {len(feature_names)}) matrix with columns "
                              f"{', '.join(feature_names)}; got shape {matrix.shape}", reason=WRONG_FEATURES)
    accepted = np.isfinite(matrix) | np.isnan(matrix) if missing else np.isfinite(matrix)
    if not accepted.all():
        row, column = (int(index) for index in np.argwhere(~accepted)[0])
        raise ValidationError(f"row {row}, feature {feature_names[column]!r} is {matrix[row, column]}: every value "
                              "must be a finite number" + (" or NaN (missing)" if missing else
                                                          " (impute missing values before the model)"),
                              reason=NOT_A_NUMBER)
    return matrix


def check_label(y: Any) -> bool:
    """A label as a bool: 0, 1, False or True, nothing else."""
    if isinstance(y, bool | np.bool_):
        return bool(y)
    if isinstance(y, int | float | np.integer | np.floating) and y in (0, 1):
        return bool(y)
    raise ValidationError(f"a label must be 0 or 1 (or False or True), not {y!r}", reason=BAD_LABEL)


def check_labels(y: Any, rows: int) -> np.ndarray:
    """One 0/1 label per row, as a bool vector."""
    labels = np.asarray(y)
    if labels.shape != (rows,):
        raise ValidationError(f"{labels.size} labels for {rows} rows", reason=BAD_LABEL)
    if labels.dtype != np.bool_:
        try:
            valid = np.isin(labels.astype(np.float64), (0.0, 1.0))
        except (TypeError, ValueError):
            valid = np.zeros(rows, dtype=bool)
        if not valid.all():
            row = int(np.argmin(valid))
            raise ValidationError(f"row {row}: a label must be 0 or 1, not {labels[row]!r}", reason=BAD_LABEL)
    return labels.astype(bool)


def proba(probability: float) -> dict[bool, float]:
    """river's answer shape for one row: both classes, summing to 1.

    >>> proba(0.25)
    {False: 0.75, True: 0.25}
    """
    return {False: 1.0 - probability, True: probability}
