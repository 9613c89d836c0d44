"""An online propensity model per product: river learns one labelled event at a time, and a
numpy snapshot of its weights scores whole batches at once with reason codes.

River's pipeline (StandardScaler -> LogisticRegression) is the source of truth; scoring
reads its means, variances and weights into arrays after each learning step, so a batch of
events costs one matrix product instead of a Python call per event and product.

`ProductModel` is a `Classifier` of the model contract (services/models/contract.py): river's
verbs, plus `learn` and `predict_batch`, the array forms scoring calls.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from river import compose, drift, linear_model, metrics, optim, preprocessing

from services.models.bank_features import FEATURE_NAMES
from services.models.contract import Row, check_label, check_labels, check_matrix, check_row, checkpoint_bytes, proba, restore_checkpoint
from services.protocol.stream_messages import ReasonCode

REASONS_PER_SCORE = 3
PRIOR_CONVERSION_RATE = 0.05
# A model serves once it has learned this many rows of each outcome; before that a product is
# scored by the fallback (live_models.py). Ten positives is the least a 16-weight logistic
# regression learns anything from beyond the base rate.
MIN_ROWS_PER_CLASS = 10


def enough_history(positives: int, negatives: int) -> bool:
    """Whether rows with these counts of each outcome are enough to train a model that serves.

    >>> enough_history(10, 500), enough_history(3, 5000), enough_history(40, 0)
    (True, False, False)
    """
    return positives >= MIN_ROWS_PER_CLASS and negatives >= MIN_ROWS_PER_CLASS


def _pipeline(learning_rate: float, l2: float) -> compose.Pipeline:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2,
            # Start from the prior so a cold model ranks by nothing rather than claiming 50 %.
            intercept_init=math.log(PRIOR_CONVERSION_RATE / (1 - PRIOR_CONVERSION_RATE)),
        ),
    )


@dataclass
class Snapshot:
    """The model frozen into arrays for vectorised scoring."""

    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    intercept: float


KS_WINDOW = 1000


@dataclass
class ProductModel:
    """River pipeline plus its snapshot, prequential quality and drift detector, for one product."""

    product: str
    learning_rate: float = 0.05
    l2: float = 1e-4
    pipeline: compose.Pipeline = field(init=False)
    snapshot: Snapshot = field(init=False)
    auc: metrics.ROCAUC = field(default_factory=metrics.ROCAUC)
    drift_detector: drift.ADWIN = field(default_factory=drift.ADWIN)
    rows_learned: int = 0
    positives_learned: int = 0
    drifts_detected: int = 0
    # The last KS_WINDOW prequential (probability, label) pairs, for the online KS statistic.
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=KS_WINDOW))

    def __post_init__(self) -> None:
        self.pipeline = _pipeline(self.learning_rate, self.l2)
        self.refresh_snapshot()

    def refresh_snapshot(self) -> None:
        scaler, regression = self.pipeline["StandardScaler"], self.pipeline["LogisticRegression"]
        variances = np.array([scaler.vars.get(name, 0.0) for name in FEATURE_NAMES])
        self.snapshot = Snapshot(
            means=np.array([scaler.means.get(name, 0.0) for name in FEATURE_NAMES]),
            # river's scaler maps a constant feature to 0; an infinite scale does the same here.
            scales=np.where(variances > 0, np.sqrt(np.where(variances > 0, variances, 1.0)), np.inf),
            weights=np.array([regression.weights.get(name, 0.0) for name in FEATURE_NAMES]),
            intercept=float(regression.intercept),
        )

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Each feature's additive share of the log-odds, rows x features."""
        snapshot = self.snapshot
        return snapshot.weights * (features - snapshot.means) / snapshot.scales

    def predict_batch(self, features: np.ndarray, partner_partial_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Propensities and per-feature contributions for a batch (rows x FEATURE_NAMES)."""
        contributions = self.contributions(features)
        log_odds = self.snapshot.intercept + contributions.sum(axis=1)
        if partner_partial_scores is not None:
            log_odds = log_odds + partner_partial_scores
        return 1.0 / (1.0 + np.exp(-log_odds)), contributions

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    def predict_proba_one(self, x: Row) -> dict[bool, float]:
        return proba(float(self.predict_batch(check_row(x, FEATURE_NAMES)[None, :])[0][0]))

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        propensities: np.ndarray = self.predict_batch(check_matrix(X, FEATURE_NAMES))[0]
        return propensities

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Row by row, as the stream would bring them (the model is online)."""
        rows = check_matrix(X, FEATURE_NAMES)
        for row, label in zip(rows, check_labels(y, len(rows)).tolist()):
            self.learn(row, label)

    def learn(self, features: np.ndarray, converted: bool) -> None:
        """`learn_one` for a vector in FEATURE_NAMES order."""
        self.learn_one(dict(zip(FEATURE_NAMES, features.tolist(), strict=True)), converted)

    def learn_one(self, x: Row, y: bool) -> None:
        """Learn one labelled example; keep prequential AUC (predict first) and watch for drift."""
        row = dict(zip(FEATURE_NAMES, check_row(x, FEATURE_NAMES).tolist()))
        converted = check_label(y)
        probability = self.pipeline.predict_proba_one(row).get(True, 0.0)
        self.auc.update(converted, probability)
        self.recent.append((probability, converted))
        self.drift_detector.update(float((probability >= 0.5) != converted))
        if self.drift_detector.drift_detected:
            self.drifts_detected += 1
        self.pipeline.learn_one(row, converted)
        self.rows_learned += 1
        self.positives_learned += converted
        self.refresh_snapshot()

    def learned_counts(self) -> tuple[int, int]:
        """How many converted and not converted rows it has learned."""
        # A checkpoint from before positives were counted has no such attribute of its own (the
        # class default says 0): its last KS_WINDOW labels tell instead.
        positives = self.__dict__.get("positives_learned")
        if positives is None:
            positives = sum(label for _, label in getattr(self, "recent", ()))
        return positives, self.rows_learned - positives

    @property
    def ready(self) -> bool:
        """Whether it has learned enough of both outcomes to serve (`enough_history`)."""
        return enough_history(*self.learned_counts())

    def ks(self) -> float:
        """Kolmogorov-Smirnov statistic over the recent window: the largest gap between the score
        distributions of converters and non-converters (0 with one class only).

        >>> model = ProductModel("p")
        >>> model.recent.extend([(0.9, True), (0.8, True), (0.2, False), (0.1, False)])
        >>> model.ks()
        1.0
        """
        pairs = list(getattr(self, "recent", ()))  # checkpoints older than the window have none
        positives = np.sort([p for p, label in pairs if label])
        negatives = np.sort([p for p, label in pairs if not label])
        if not len(positives) or not len(negatives):
            return 0.0
        grid = np.concatenate([positives, negatives])
        gaps = np.searchsorted(negatives, grid, side="right") / len(negatives) \
            - np.searchsorted(positives, grid, side="right") / len(positives)
        return float(np.max(np.abs(gaps)))

    def to_bytes(self) -> bytes:
        return checkpoint_bytes(self)

    @classmethod
    def from_bytes(cls, checkpoint: bytes) -> ProductModel:
        return restore_checkpoint(checkpoint, cls)


def top_reasons(contributions: np.ndarray, count: int = REASONS_PER_SCORE) -> list[tuple[str, float]]:
    """The features that moved this score most, largest absolute contribution first.

    >>> top_reasons(np.array([0.1, -2.0] + [0.0] * (len(FEATURE_NAMES) - 2)), 2)
    [('tenure_years', -2.0), ('age', 0.1)]
    """
    order = np.argsort(-np.abs(contributions))[:count]
    return [(FEATURE_NAMES[index], float(contributions[index])) for index in order]


def top_reasons_batch(contributions: np.ndarray, count: int = REASONS_PER_SCORE,
                      names: tuple[str, ...] = FEATURE_NAMES) -> list[tuple[ReasonCode, ...]]:
    """`top_reasons` for every row of a batch at once (one partial sort for the whole batch).

    >>> rows = np.zeros((2, len(FEATURE_NAMES))); rows[0, 1] = -2.0; rows[0, 0] = 0.1; rows[1, 3] = 5.0
    >>> [reasons[0] for reasons in top_reasons_batch(rows, 2)]
    [ReasonCode(feature='tenure_years', contribution=-2.0), ReasonCode(feature='log_balance', contribution=5.0)]
    """
    magnitudes = -np.abs(contributions)
    top = np.argpartition(magnitudes, count - 1, axis=1)[:, :count]
    order = np.argsort(np.take_along_axis(magnitudes, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    values = np.take_along_axis(contributions, top, axis=1)
    # ReasonCode objects straight away: they go into the scores as they are (no second pass per row).
    return [tuple([ReasonCode(names[index], value) for index, value in zip(indices, row_values)])
            for indices, row_values in zip(top.tolist(), values.tolist())]
