"""Federated SecureBoost in the model contract's verbs: both parties in one process, every message
through the codec (`train_secureboost`, then the partner's split decisions at scoring time), for
evaluation and the contract checks. In a deployment each party keeps its own half
(services/models/secureboost/serving.py); this adapter holds both, so its checkpoint is for one
house only.

Boosting is a batch learner: learning means training the ensemble again on the rows kept so far
(the latest `max_rows`). `learn_many` adds its rows and trains; `learn_one` adds its row and
trains every `window` rows. Missing values are NaN (each split sends them one way); infinities
are refused.

>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 4))
>>> y = (X[:, 0] + X[:, 2] > 0).astype(int)
>>> model = SecureBoostModel(("b0", "b1"), ("p0", "p1"), BoostingParameters(trees=5, depth=2))
>>> model.learn_many(X, y)
>>> bool(((model.predict_proba_many(X) > 0.5) == y).mean() > 0.85)
True
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Self

import numpy as np

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.paillier import PaillierPrivateKey, generate_keypair
from services.models.contract import Row, check_label, check_labels, check_matrix, check_row, checkpoint_bytes, proba, restore_checkpoint
from services.models.secureboost import BankParty, BankTrees, BoostingParameters, PartnerParty, SplitTable, train_secureboost
from services.models.secureboost.tree import bits_from_bitmaps
from services.models.wire import Wire

MODEL_NAME = "sbt"


class SecureBoostModel:
    """Bank trees and partner split table of a federated SecureBoost, trained and applied in one process."""

    def __init__(self, bank_features: Sequence[str], partner_features: Sequence[str],
                 parameters: BoostingParameters | None = None, *, window: int = 200, max_rows: int = 100_000,
                 encrypted: bool = False, seed: int = 0) -> None:
        if set(bank_features) & set(partner_features):
            raise ValueError(f"features on both sides: {sorted(set(bank_features) & set(partner_features))}")
        self.bank_features, self.partner_features = tuple(bank_features), tuple(partner_features)
        self.parameters = parameters or BoostingParameters()
        self.window, self.max_rows, self.encrypted, self.seed = window, max_rows, encrypted, seed
        self.trees: BankTrees | None = None
        self.split_table = SplitTable()
        self.trainings = 0
        self._rows = np.empty((0, len(self.feature_names)))
        self._labels = np.empty(0, dtype=bool)
        self._since_training = 0
        self._codec: AvroCodec | None = None
        self._private_key: PaillierPrivateKey | None = None

    # --- the contract ------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        return (*self.bank_features, *self.partner_features)

    def learn_one(self, x: Row, y: bool) -> None:
        row, label = check_row(x, self.feature_names, missing=True), check_label(y)
        self._keep(row[None, :], np.array([label]))
        self._since_training += 1
        if self._since_training >= self.window:
            self._train()

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        rows = check_matrix(X, self.feature_names, missing=True)
        self._keep(rows, check_labels(y, len(rows)))
        self._train()

    def predict_proba_one(self, x: Row) -> dict[bool, float]:
        return proba(float(self._predict(check_row(x, self.feature_names, missing=True)[None, :])[0]))

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        return self._predict(check_matrix(X, self.feature_names, missing=True))

    def to_bytes(self) -> bytes:
        return checkpoint_bytes(self)

    @classmethod
    def from_bytes(cls, checkpoint: bytes) -> Self:
        return restore_checkpoint(checkpoint, cls)

    def __getstate__(self) -> dict[str, object]:
        # The key and the codec are made again where the model is loaded; the key never leaves.
        return {**self.__dict__, "_codec": None, "_private_key": None}

    # --- the protocol ------------------------------------------------------------------------------------
    def _keep(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self._rows = np.vstack([self._rows, rows])[-self.max_rows:]
        self._labels = np.concatenate([self._labels, labels])[-self.max_rows:]

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[:, :len(self.bank_features)], rows[:, len(self.bank_features):]

    def _train(self) -> None:
        join_ids = [f"row{index}" for index in range(len(self._rows))]
        bank_rows, partner_rows = self._split(self._rows)
        if self.encrypted and self._private_key is None:
            self._private_key = generate_keypair()[1]
        bank = BankParty(join_ids, self._labels.astype(np.float64), bank_rows, self.parameters,
                         private_key=self._private_key, encrypted=self.encrypted, workers=1)
        # The candidates' order is the partner's secret in production; seeded here so runs repeat.
        partner = PartnerParty(join_ids, partner_rows, workers=1, shuffle=random.Random(self.seed * 1_000_003 + self.trainings))
        try:
            train_secureboost(bank, partner, codec=self._the_codec(), model_name=MODEL_NAME)
        finally:
            bank.close()
            partner.close()
        self.trees, self.split_table = bank.model, partner.models[MODEL_NAME][1]
        self.trainings += 1
        self._since_training = 0

    def _predict(self, rows: np.ndarray) -> np.ndarray:
        """The partner's split decisions cross as at scoring time; the bank walks its trees."""
        if self.trees is None:
            return np.full(len(rows), 0.5)
        join_ids = [f"row{index}" for index in range(len(rows))]
        bank_rows, partner_rows = self._split(rows)
        partner = PartnerParty(join_ids, partner_rows, workers=1)
        partner.models[MODEL_NAME] = ("v1", self.split_table)
        decisions = Wire(self._the_codec()).to_bank(partner.decisions(join_ids, [MODEL_NAME]))
        bitmaps = decisions.bitmaps(MODEL_NAME)
        bits = bits_from_bitmaps([bitmaps[join_id] for join_id in join_ids], self.trees.partner_splits)
        probabilities: np.ndarray = self.trees.probabilities(bank_rows, bits)
        return probabilities

    def _the_codec(self) -> AvroCodec:
        if self._codec is None:
            self._codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
        return self._codec
