"""The two objectives the regulator's assessment names for GBDT: log loss and exponential loss.

Both work on the raw score f (log-odds for log loss, half log-odds for exponential loss) and
give, per row, the gradient g and hessian h of the loss in f, which is all a tree needs.

- log loss: L = -y log p - (1 - y) log(1 - p), p = sigmoid(f); g = p - y, h = p (1 - p).
- exponential loss (AdaBoost's): L = exp(-s f), s = 2y - 1; g = -s exp(-s f), h = exp(-s f).
  Its minimiser is f = log(p / (1 - p)) / 2, so P(y = 1) = sigmoid(2 f).

>>> loss = LOSSES["log_loss"]
>>> g, h = loss.gradients(np.array([1.0, 0.0]), np.zeros(2))
>>> g.tolist(), h.tolist()
([-0.5, 0.5], [0.25, 0.25])
>>> g, h = LOSSES["exponential"].gradients(np.array([1.0, 0.0]), np.zeros(2))
>>> g.tolist(), h.tolist()
([-1.0, 1.0], [1.0, 1.0])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

HESSIAN_FLOOR = 1e-16  # as xgboost: a row that is certain still weighs a little
EXPONENT_CAP = 50.0  # exp(50) ~ 5e21: the exponential loss' weights stay finite


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


class Loss(Protocol):
    @property
    def name(self) -> str: ...

    def initial_score(self, labels: np.ndarray) -> float: ...

    def gradients(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def probability(self, scores: np.ndarray) -> np.ndarray: ...

    def value(self, labels: np.ndarray, scores: np.ndarray) -> float: ...


def _positive_share(labels: np.ndarray) -> float:
    share = float(labels.mean()) if labels.size else 0.5
    return min(max(share, 1e-6), 1 - 1e-6)


@dataclass(frozen=True)
class LogLoss:
    name: str = "log_loss"

    def initial_score(self, labels: np.ndarray) -> float:
        share = _positive_share(labels)
        return math.log(share / (1 - share))

    def gradients(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = sigmoid(scores)
        return p - labels, np.maximum(p * (1 - p), HESSIAN_FLOOR)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(scores)

    def value(self, labels: np.ndarray, scores: np.ndarray) -> float:
        # log(1 + e^f) - y f, computed without overflow
        return float(np.mean(np.logaddexp(0.0, scores) - labels * scores))


@dataclass(frozen=True)
class ExponentialLoss:
    name: str = "exponential"

    def initial_score(self, labels: np.ndarray) -> float:
        share = _positive_share(labels)
        return 0.5 * math.log(share / (1 - share))

    def gradients(self, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        signs = 2 * labels - 1
        weights = np.exp(np.minimum(-signs * scores, EXPONENT_CAP))
        return -signs * weights, np.maximum(weights, HESSIAN_FLOOR)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(2 * scores)

    def value(self, labels: np.ndarray, scores: np.ndarray) -> float:
        return float(np.mean(np.exp(np.minimum(-(2 * labels - 1) * scores, EXPONENT_CAP))))


LOSSES: dict[str, Loss] = {"log_loss": LogLoss(), "exponential": ExponentialLoss()}
