"""How well a model ranks held-out rows: the exact ROC AUC (river's online ROCAUC, which scoring
keeps as it learns, approximates it over a fixed grid of thresholds)."""
from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The probability that a random positive scores above a random negative (ties count half),
    by the Mann-Whitney rank sum; None when the rows hold one class only (AUC is undefined).

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    True
    """
    positives = labels.astype(bool)
    count_positive, count_negative = int(positives.sum()), int((~positives).sum())
    if not count_positive or not count_negative:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # Tied scores share the mean of their ranks.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    rank_sum = float(ranks[positives].sum())
    return (rank_sum - count_positive * (count_positive + 1) / 2) / (count_positive * count_negative)


def calibration_shift(log_odds: np.ndarray, labels: np.ndarray, bound: float = 20.0) -> float:
    """The shift of every log-odds that makes the mean predicted probability equal the observed
    rate ("calibration in the large": a model trained on other units, such as customers rather
    than contacts, keeps its ranking and is put on the rows' scale). Found by bisection: the
    summed probability grows with the shift.

    >>> z = np.array([-1.0, 0.0, 1.0, 2.0])
    >>> shift = calibration_shift(z, np.array([0, 0, 0, 1]))
    >>> round(float(np.mean(1 / (1 + np.exp(-(z + shift))))), 6)
    0.25
    """
    target = float(labels.sum())
    low, high = -bound, bound
    for _ in range(100):
        middle = (low + high) / 2
        if float(np.sum(1.0 / (1.0 + np.exp(-(log_odds + middle))))) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2
