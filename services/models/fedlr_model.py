"""Federated LR in the model contract's verbs: both parties in one process, every message through
the codec as over the exchange topics (`train_federated`, `predict`), for evaluation and the
contract checks. In a deployment each party keeps its own half (services/exchange, services/partner);
this adapter holds both, so its checkpoint is for one house only.

A row holds the bank's features and the partner's, by name (`bank_features`, `partner_features`).
`learn_many` runs `epochs` passes of the protocol over the rows, warm-started from the weights so
far; each party's preparation (services/models/preparation.py) is fitted on the first rows trained
on and kept, as a deployed half keeps the one it was trained with; `learn_one` keeps rows until
there is a window of `window` rows (at least the protocol's minimum batch: the partner must never
see fewer) and then runs one pass over it, as online learning from responses does.

>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 4))
>>> y = (X[:, 0] + X[:, 2] + 0.3 * rng.normal(size=400) > 0).astype(int)
>>> model = FederatedLR(("b0", "b1"), ("p0", "p1"), epochs=5)
>>> model.learn_many(X, y)
>>> bool(((model.predict_proba_many(X) > 0.5) == y).mean() > 0.85)
True
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.paillier import PaillierPrivateKey, generate_keypair
from services.models.contract import Row, check_label, check_labels, check_matrix, check_row, checkpoint_bytes, proba, restore_checkpoint
from services.models.fedlr import DEFAULT_MIN_BATCH_SIZE, BankParty, PartnerParty, train_federated
from services.models.preparation import Preparation
from services.models.wire import Wire


class FederatedLR:
    """Bank and partner halves of a federated logistic regression, trained and applied in one process."""

    def __init__(self, bank_features: Sequence[str], partner_features: Sequence[str], *, epochs: int = 5,
                 batch_size: int = 100, learning_rate: float = 0.15, l2: float = 0.0,
                 min_batch_size: int = DEFAULT_MIN_BATCH_SIZE, window: int | None = None, encrypted: bool = False,
                 seed: int = 0) -> None:
        if set(bank_features) & set(partner_features):
            raise ValueError(f"features on both sides: {sorted(set(bank_features) & set(partner_features))}")
        self.bank_features, self.partner_features = tuple(bank_features), tuple(partner_features)
        self.epochs, self.batch_size, self.learning_rate, self.l2 = epochs, batch_size, learning_rate, l2
        self.min_batch_size = min_batch_size
        self.window = max(window or batch_size, min_batch_size)
        self.encrypted, self.seed = encrypted, seed
        self.bank_weights = np.zeros(len(self.bank_features))
        self.partner_weights = np.zeros(len(self.partner_features))
        self.bias = 0.0
        self.trainings = 0  # protocol runs so far: each shuffles with its own seed, so runs repeat exactly
        self._pending_rows: list[np.ndarray] = []
        self._pending_labels: list[bool] = []
        self.bank_preparation: Preparation | None = None
        self.partner_preparation: Preparation | None = None
        self._codec: AvroCodec | None = None
        self._private_key: PaillierPrivateKey | None = None

    # --- the contract ------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        return (*self.bank_features, *self.partner_features)

    def learn_one(self, x: Row, y: bool) -> None:
        self._pending_rows.append(check_row(x, self.feature_names))
        self._pending_labels.append(check_label(y))
        if len(self._pending_rows) >= self.window:
            rows, labels = np.vstack(self._pending_rows), np.array(self._pending_labels)
            self._pending_rows, self._pending_labels = [], []
            self._train(rows, labels, epochs=1)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        rows = check_matrix(X, self.feature_names)
        self._train(rows, check_labels(y, len(rows)), self.epochs)

    def predict_proba_one(self, x: Row) -> dict[bool, float]:
        return proba(float(self._predict(check_row(x, self.feature_names)[None, :])[0]))

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        return self._predict(check_matrix(X, self.feature_names))

    def to_bytes(self) -> bytes:
        return checkpoint_bytes(self)

    @classmethod
    def from_bytes(cls, checkpoint: bytes) -> Self:
        return restore_checkpoint(checkpoint, cls)

    def __getstate__(self) -> dict[str, object]:
        # The key and the codec are made again where the model is loaded; the key never leaves.
        return {**self.__dict__, "_codec": None, "_private_key": None}

    # --- the protocol ------------------------------------------------------------------------------------
    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[:, :len(self.bank_features)], rows[:, len(self.bank_features):]

    def _parties(self, rows: np.ndarray, labels: np.ndarray) -> tuple[BankParty, PartnerParty]:
        join_ids = [f"row{index}" for index in range(len(rows))]
        bank_rows, partner_rows = self._split(rows)
        if self.encrypted and self._private_key is None:
            self._private_key = generate_keypair()[1]
        bank = BankParty(join_ids, labels.astype(np.float64), bank_rows, private_key=self._private_key,
                         encrypted=self.encrypted, learning_rate=self.learning_rate, l2=self.l2,
                         min_batch_size=self.min_batch_size, workers=1, shuffle_seed=self.seed * 1_000_003 + self.trainings,
                         preparation=self.bank_preparation)
        partner = PartnerParty(join_ids, partner_rows, workers=1, preparation=self.partner_preparation)
        self.bank_preparation, self.partner_preparation = bank.preparation, partner.preparation
        if self.bank_weights.shape != bank.weights.shape or self.partner_weights.shape != partner.weights.shape:
            # The first fit decides the prepared columns (missing indicators added, constants dropped).
            self.bank_weights, self.partner_weights = np.zeros_like(bank.weights), np.zeros_like(partner.weights)
        bank.weights, bank.bias, partner.weights = self.bank_weights.copy(), self.bias, self.partner_weights.copy()
        return bank, partner

    def _train(self, rows: np.ndarray, labels: np.ndarray, epochs: int) -> None:
        bank, partner = self._parties(rows, labels)
        try:
            train_federated(bank, partner, mode="minibatch", epochs=epochs, batch_size=max(self.batch_size, self.min_batch_size),
                            codec=self._the_codec())
        finally:
            bank.close()
            partner.close()
        self.bank_weights, self.bias, self.partner_weights = bank.weights.copy(), bank.bias, partner.weights.copy()
        self.trainings += 1

    def _predict(self, rows: np.ndarray) -> np.ndarray:
        """The partner's partial scores cross as at scoring time; the bank adds its share."""
        if self.bank_preparation is None or self.partner_preparation is None:
            return np.full(len(rows), 0.5)  # nothing learned yet: zero weights on both sides
        join_ids = [f"row{index}" for index in range(len(rows))]
        bank_rows, partner_rows = self._split(rows)
        bank = BankParty(join_ids, np.zeros(len(rows)), bank_rows, encrypted=False, min_batch_size=1, workers=1,
                         preparation=self.bank_preparation)
        partner = PartnerParty(join_ids, partner_rows, workers=1, preparation=self.partner_preparation)
        bank.weights, bank.bias, partner.weights = self.bank_weights, self.bias, self.partner_weights
        partial_scores = Wire(self._the_codec()).to_bank(partner.partial_scores(join_ids))
        probabilities: np.ndarray = bank.predict_proba(join_ids, partial_scores)
        return probabilities

    def _the_codec(self) -> AvroCodec:
        if self._codec is None:
            self._codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
        return self._codec

