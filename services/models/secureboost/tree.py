"""A trained SecureBoost model as each party keeps it: the bank's trees and the partner's split table.

The bank's half (`BankTrees`) holds every tree's structure, the bank's own splits (column and
threshold), the leaf weights and the loss; where a node splits on a partner column it holds only
the partner's split id. The partner's half (`SplitTable`) holds, per split id, its column, its
threshold and where missing values go. To score a person the partner answers every split of the
table for that person (one bit each, `SplitTable.decisions`); the bank walks its trees with its
own features and those bits.

>>> table = SplitTable([SplitRule(0, 1.5, False)])
>>> bits = table.decisions(np.array([[1.0], [2.0], [np.nan]]))
>>> bits.tolist()
[[True], [False], [False]]
>>> root = TreeNode(0, owner="partner", split_id=0, left=1, right=2)
>>> trees = BankTrees("log_loss", 0.0, [[root, TreeNode(1, weight=-1.0), TreeNode(2, weight=1.0)]], 0, partner_splits=1)
>>> trees.raw_scores(np.empty((3, 0)), bits).tolist()
[-1.0, 1.0, 1.0]
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from services.core.errors import ValidationError
from services.models.secureboost.losses import LOSSES

Owner = Literal["leaf", "bank", "partner"]


@dataclass
class TreeNode:
    """One node; heap numbering (children of i are 2i + 1 and 2i + 2)."""

    node_id: int
    owner: Owner = "leaf"
    column: int = -1  # bank splits: the bank's column
    threshold: float = math.inf  # bank splits: x <= threshold goes left
    missing_left: bool = False
    split_id: int = -1  # partner splits: the row of the partner's split table
    left: int = -1
    right: int = -1
    weight: float = 0.0  # the learning rate times -G / (H + lambda) of the node's rows (leaves: its score)


@dataclass(frozen=True)
class SplitRule:
    column: int
    threshold: float
    missing_left: bool


@dataclass
class SplitTable:
    """The partner's half: its splits, in the order the bank's trees name them."""

    rules: list[SplitRule] = field(default_factory=list)

    def add(self, rule: SplitRule) -> int:
        self.rules.append(rule)
        return len(self.rules) - 1

    def decisions(self, features: np.ndarray) -> np.ndarray:
        """(rows, splits) booleans: True where the split sends the row left."""
        matrix = np.asarray(features, dtype=np.float64)
        bits = np.zeros((matrix.shape[0], len(self.rules)), dtype=bool)
        for index, rule in enumerate(self.rules):
            column = matrix[:, rule.column]
            missing = np.isnan(column)
            bits[:, index] = np.where(missing, rule.missing_left, column <= rule.threshold)
        return bits

    def to_bytes(self) -> bytes:
        return json.dumps([[r.column, r.threshold if math.isfinite(r.threshold) else "inf", r.missing_left]
                           for r in self.rules]).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SplitTable:
        return cls([SplitRule(int(c), float(t), bool(m)) for c, t, m in json.loads(raw)])


@dataclass
class BankTrees:
    """The bank's half: loss, the initial score and the trees (each a list of nodes, the root first)."""

    loss: str
    initial_score: float
    trees: list[list[TreeNode]]
    bank_columns: int
    partner_splits: int = 0

    def raw_scores(self, bank_features: np.ndarray, partner_bits: np.ndarray) -> np.ndarray:
        """f per row: the initial score plus one leaf weight per tree."""
        features = np.asarray(bank_features, dtype=np.float64)
        bits = np.asarray(partner_bits, dtype=bool)
        if features.ndim != 2 or features.shape[1] != self.bank_columns:
            raise ValidationError(f"the model needs {self.bank_columns} bank columns, not shape {features.shape}")
        if bits.shape != (features.shape[0], self.partner_splits) and self.partner_splits:
            raise ValidationError(f"the model needs {self.partner_splits} partner decisions per row, not {bits.shape}")
        scores = np.full(features.shape[0], self.initial_score)
        for tree, at in zip(self.trees, self.leaf_ids(features, bits).T):
            weights = {node.node_id: node.weight for node in tree}
            scores += np.array([weights[node_id] for node_id in at.tolist()]) if at.size else 0.0
        return scores

    def leaf_ids(self, bank_features: np.ndarray, partner_bits: np.ndarray) -> np.ndarray:
        """(rows, trees): the leaf each row reaches in each tree."""
        leaves = np.zeros((bank_features.shape[0], len(self.trees)), dtype=np.int64)
        for index, tree in enumerate(self.trees):
            at = leaves[:, index]
            for node in tree:  # parents come before their children
                if node.owner == "leaf":
                    continue
                here = at == node.node_id
                if node.owner == "bank":
                    column = bank_features[here, node.column]
                    left = np.where(np.isnan(column), node.missing_left, column <= node.threshold)
                else:
                    left = partner_bits[here, node.split_id]
                at[here] = np.where(left, node.left, node.right)
        return leaves

    def contributions(self, bank_features: np.ndarray, partner_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each bank column's share of f and the partner's as one last column (the change of node value at
        each split on the row's path, credited to the split's owner), and the base they add to:
        base + contributions.sum(axis=1) == raw_scores.

        >>> trees = BankTrees("log_loss", 0.5, [[TreeNode(0, "bank", column=0, threshold=0.0, left=1, right=2, weight=0.1),
        ...                                       TreeNode(1, weight=-0.3), TreeNode(2, weight=0.4)]], 1)
        >>> shares, base = trees.contributions(np.array([[1.0]]), np.zeros((1, 0), dtype=bool))
        >>> shares.tolist(), base.tolist(), trees.raw_scores(np.array([[1.0]]), np.zeros((1, 0), dtype=bool)).tolist()
        ([[0.30000000000000004, 0.0]], [0.6], [0.9])
        """
        features = np.asarray(bank_features, dtype=np.float64)
        leaves = self.leaf_ids(features, np.asarray(partner_bits, dtype=bool))
        shares = np.zeros((features.shape[0], self.bank_columns + 1))
        base = np.full(features.shape[0], self.initial_score)
        for index, tree in enumerate(self.trees):
            by_id = {node.node_id: node for node in tree}
            base += tree[0].weight
            for row, leaf in enumerate(leaves[:, index].tolist()):
                child = leaf
                while child:
                    parent = by_id[(child - 1) // 2]
                    column = parent.column if parent.owner == "bank" else self.bank_columns
                    shares[row, column] += by_id[child].weight - parent.weight
                    child = parent.node_id
        return shares, base

    def probabilities(self, bank_features: np.ndarray, partner_bits: np.ndarray) -> np.ndarray:
        return LOSSES[self.loss].probability(self.raw_scores(bank_features, partner_bits))

    def to_bytes(self) -> bytes:
        def node(n: TreeNode) -> dict[str, object]:
            values = asdict(n)
            values["threshold"] = n.threshold if math.isfinite(n.threshold) else "inf"
            return values
        return json.dumps({"loss": self.loss, "initial_score": self.initial_score, "bank_columns": self.bank_columns,
                           "partner_splits": self.partner_splits,
                           "trees": [[node(n) for n in tree] for tree in self.trees]}).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> BankTrees:
        values = json.loads(raw)
        trees = [[TreeNode(**{**n, "threshold": float(n["threshold"])}) for n in tree] for tree in values["trees"]]
        return cls(str(values["loss"]), float(values["initial_score"]), trees, int(values["bank_columns"]),
                   int(values["partner_splits"]))


def bits_from_bitmaps(bitmaps: Sequence[bytes], splits: int) -> np.ndarray:
    """(rows, splits) booleans from one bitmap per row (most significant bit first)."""
    if not bitmaps:
        return np.zeros((0, splits), dtype=bool)
    packed = np.frombuffer(b"".join(bitmaps), dtype=np.uint8).reshape(len(bitmaps), -1)
    return np.unpackbits(packed, axis=1, count=splits).astype(bool)
