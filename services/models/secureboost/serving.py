"""The bank's half of a deployed SecureBoost model, as scoring applies it.

Registry model `sbt.<product>`: the checkpoint is the bank's trees (`BankTrees`, JSON: structure,
bank thresholds, node values) over the bank's feature vector (`bank_features.FEATURE_NAMES`), with
the label of the partner half they were trained with. The partner keeps its split table in its
own store and pushes, per aligned person, one bit per split (`SbtDecisions`, kept by the exchange
under `sbt:<join id>`); the bank walks its trees with its own features and those bits. The
partner's share shows as one reason code, `partner_features`.

>>> half = SbtBankHalf("travel", BankTrees("log_loss", 0.0, [[TreeNode(0, weight=0.2)]], len(FEATURE_NAMES)), "sbt.travel@p1")
>>> SbtBankHalf.from_bytes(half.to_bytes()) == half
True
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from services.models.bank_features import FEATURE_NAMES
from services.models.registry import ModelRegistry, ModelVersion
from services.models.secureboost.losses import LOSSES
from services.models.secureboost.tree import BankTrees, TreeNode, bits_from_bitmaps

__all__ = ["LiveSecureBoost", "SbtBankHalf", "TreeNode", "load_secureboost", "secureboost_model_name"]


def secureboost_model_name(product: str) -> str:
    return f"sbt.{product}"


@dataclass(frozen=True)
class SbtBankHalf:
    product: str
    trees: BankTrees
    partner_version: str  # the label of the partner's matching split table (in every decision it sends)

    def score(self, features: np.ndarray, bitmaps: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Propensities and per-feature contributions (the partner's aggregate last) for rows of bank
        features with the partner's bitmap of each row."""
        bits = bits_from_bitmaps(bitmaps, self.trees.partner_splits)
        shares, base = self.trees.contributions(features, bits)
        return LOSSES[self.trees.loss].probability(base + shares.sum(axis=1)), shares

    def to_bytes(self) -> bytes:
        return json.dumps({"product": self.product, "partner_version": self.partner_version,
                           "features": list(FEATURE_NAMES), "trees": self.trees.to_bytes().decode()}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SbtBankHalf:
        values = json.loads(raw)
        if values["features"] != list(FEATURE_NAMES):
            raise ValueError("SecureBoost checkpoint was trained on other bank features")
        return cls(values["product"], BankTrees.from_bytes(values["trees"].encode()), values["partner_version"])


@dataclass(frozen=True)
class LiveSecureBoost:
    half: SbtBankHalf
    version: ModelVersion

    @property
    def label(self) -> str:
        return self.version.label


def load_secureboost(registry: ModelRegistry, products: tuple[str, ...]) -> dict[str, LiveSecureBoost]:
    """The latest SecureBoost half per product, where one has been trained."""
    return {product: LiveSecureBoost(SbtBankHalf.from_bytes(checkpoint), version)
            for product, (version, checkpoint) in registry.latest_per_product(products, secureboost_model_name).items()}
