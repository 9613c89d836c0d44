"""The bank's half of a federated model, and how scoring combines it with the partner's half.

A federated logistic regression (services/models/fedlr.py) ends with weights on both sides: the bank
keeps w_b over its own features as its `Preparation` turns them out (fitted on its training rows,
services/models/preparation.py) and the intercept, the partner keeps w_p over its own prepared
features. At scoring time the partner sends w_p . x_p for an aligned customer (services/exchange);
the bank prepares the event's raw features as in training (missing values imputed the same way),
adds w_b . x_b + b and applies the sigmoid. The partner's share appears in the reason codes as
one aggregate, `partner_features`: the bank never learns which partner feature moved it.

The half, preparation included, is stored as the checkpoint of registry model `fedlr.<product>`
(JSON), so it carries a service number, lineage and deployment records like every model; the
preparation stays in the bank.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from services.models.bank_features import FEATURE_NAMES
from services.models.preparation import Preparation
from services.models.registry import ModelRegistry, ModelVersion

PARTNER_REASON = "partner_features"
REASON_NAMES: tuple[str, ...] = (*FEATURE_NAMES, PARTNER_REASON)


def federated_model_name(product: str) -> str:
    return f"fedlr.{product}"


@dataclass(frozen=True)
class BankHalf:
    """w_b (over the preparation's output columns), b and the bank's preparation, for one product."""

    product: str
    weights: np.ndarray
    preparation: Preparation
    intercept: float
    partner_version: str  # the label of the partner's matching weights (in every partial score)

    def __post_init__(self) -> None:
        if self.preparation.inputs != len(FEATURE_NAMES) or self.weights.shape != (self.preparation.outputs,):
            raise ValueError(f"a federated half takes {len(FEATURE_NAMES)} bank features and one weight per prepared "
                             f"column; got {self.preparation.inputs} and {self.weights.shape} for {self.preparation.outputs}")

    def prepared(self, features: np.ndarray) -> np.ndarray:
        """One event's raw features (FEATURE_NAMES order) as the half takes them: its preparation's output."""
        row: np.ndarray = self.preparation.transform(features[None, :])[0]
        return row

    def contributions(self, features: np.ndarray, partial_scores: np.ndarray) -> np.ndarray:
        """Each bank feature's share of the log-odds (raw features in FEATURE_NAMES order, NaN where
        missing; a missing indicator counts toward its feature, a dropped feature gets 0), and the
        partner's aggregate share last."""
        shares = self.preparation.per_input(self.preparation.transform(features) * self.weights)
        return np.column_stack([shares, partial_scores])

    def propensities(self, contributions: np.ndarray) -> np.ndarray:
        log_odds = self.intercept + np.asarray(contributions.sum(axis=1), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-log_odds))

    def to_bytes(self) -> bytes:
        return json.dumps({"product": self.product, "weights": self.weights.tolist(),
                           "preparation": self.preparation.to_dict(), "intercept": self.intercept,
                           "partner_version": self.partner_version, "features": list(FEATURE_NAMES)}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BankHalf:
        """A checkpoint; one written before preparations (`mean`, `scale`) reads as their standardisation."""
        values = json.loads(raw)
        if values["features"] != list(FEATURE_NAMES):
            raise ValueError("federated checkpoint was trained on other bank features")
        preparation = (Preparation.from_dict(values["preparation"]) if "preparation" in values
                       else Preparation.standardisation(np.asarray(values["mean"]), np.asarray(values["scale"])))
        return cls(values["product"], np.asarray(values["weights"], dtype=np.float64), preparation,
                   float(values["intercept"]), str(values["partner_version"]))


@dataclass(frozen=True)
class LiveFederated:
    half: BankHalf
    version: ModelVersion

    @property
    def label(self) -> str:
        return self.version.label


def load_federated(registry: ModelRegistry, products: tuple[str, ...]) -> dict[str, LiveFederated]:
    """The latest federated half per product, where one has been trained."""
    return {product: LiveFederated(BankHalf.from_bytes(checkpoint), version)
            for product, (version, checkpoint) in registry.latest_per_product(products, federated_model_name).items()}
