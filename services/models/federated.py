"""The bank's half of a federated model, and how scoring combines it with the partner's half.

A federated logistic regression (services/models/fedlr.py) ends with weights on both sides: the bank
keeps w_b over its own standardised features and the intercept, the partner keeps w_p. At
scoring time the partner sends w_p . x_p for an aligned customer (services/exchange); the bank
adds w_b . x_b + b and applies the sigmoid. The partner's share appears in the reason codes as
one aggregate, `partner_features`: the bank never learns which partner feature moved it.

The half is stored as the checkpoint of registry model `fedlr.<product>` (JSON), so it carries a
service number, lineage and deployment records like every model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from services.models.bank_features import FEATURE_NAMES
from services.models.registry import ModelRegistry, ModelVersion

PARTNER_REASON = "partner_features"
REASON_NAMES: tuple[str, ...] = (*FEATURE_NAMES, PARTNER_REASON)


def federated_model_name(product: str) -> str:
    return f"fedlr.{product}"


@dataclass(frozen=True)
class BankHalf:
    """w_b, b and the standardisation of the bank's features, for one product."""

    product: str
    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    partner_version: str  # the label of the partner's matching weights (in every partial score)

    def prepared(self, features: np.ndarray) -> np.ndarray:
        """The bank's features as the half was trained on them (standardised)."""
        prepared: np.ndarray = (features - self.mean) / self.scale
        return prepared

    def contributions(self, features: np.ndarray, partial_scores: np.ndarray) -> np.ndarray:
        """Each bank feature's share of the log-odds, and the partner's aggregate share last."""
        return np.column_stack([self.weights * self.prepared(features), partial_scores])

    def propensities(self, contributions: np.ndarray) -> np.ndarray:
        log_odds = self.intercept + np.asarray(contributions.sum(axis=1), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-log_odds))

    def to_bytes(self) -> bytes:
        return json.dumps({"product": self.product, "weights": self.weights.tolist(), "mean": self.mean.tolist(),
                           "scale": self.scale.tolist(), "intercept": self.intercept,
                           "partner_version": self.partner_version, "features": list(FEATURE_NAMES)}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BankHalf:
        values = json.loads(raw)
        if values["features"] != list(FEATURE_NAMES):
            raise ValueError("federated checkpoint was trained on other bank features")
        weights, mean, scale = (np.asarray(values[key], dtype=np.float64) for key in ("weights", "mean", "scale"))
        return cls(values["product"], weights, mean, scale, float(values["intercept"]), str(values["partner_version"]))


@dataclass(frozen=True)
class LiveFederated:
    half: BankHalf
    version: ModelVersion

    @property
    def label(self) -> str:
        return f"{self.version.model_name}@v{self.version.version}"


def load_federated(registry: ModelRegistry, products: tuple[str, ...]) -> dict[str, LiveFederated]:
    """The latest federated half per product, where one has been trained."""
    live = {}
    for product in products:
        latest = registry.latest(federated_model_name(product))
        if latest is not None and latest[1]:
            live[product] = LiveFederated(BankHalf.from_bytes(latest[1]), latest[0])
    return live
