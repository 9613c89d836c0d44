"""The bank's side of SecureBoost (the guest): labels, its features, the private key, the trees.

Per tree it computes g and h from the loss, packs and encrypts them; per level it asks the
partner for the histograms of the smaller child of each pair (the other one derived), decrypts
them, adds its own candidates (its histograms in clear), and picks each node's split by
xgboost's gain. A partner split is named to the partner by candidate index only; the partner
answers which rows go left. Leaf weights and scores never leave the bank.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.core.errors import ConfigError, ValidationError
from services.crypto.paillier import PaillierPrivateKey, PaillierPublicKey, generate_keypair
from services.models.secureboost.binning import QuantileBins, check_features
from services.models.secureboost.histogram import candidate_splits
from services.models.secureboost.losses import LOSSES, Loss
from services.models.secureboost.packing import DEFAULT_VALUE_BITS, GradientPacker, value_width
from services.models.secureboost.tree import BankTrees, TreeNode, bits_from_bitmaps
from services.models.wire import PLAINTEXT_MODULUS
from services.models.workers import WorkerPool
from services.protocol.exchange_messages import (
    BAD_SBT_MESSAGE,
    SbtDecisions,
    SbtFinish,
    SbtGradients,
    SbtHistograms,
    SbtNodeRequest,
    SbtSplitRows,
    SbtSplits,
    SbtStart,
)

_BAD = BAD_SBT_MESSAGE
MIN_GAIN = 1e-6  # xgboost's kRtEps: a split must gain more than this (and more than gamma)


@dataclass(frozen=True)
class BoostingParameters:
    """trees, depth, learning rate, bins, min child weight, lambda (L2 on leaf weights), gamma, loss."""

    trees: int = 30
    depth: int = 3
    learning_rate: float = 0.3
    bins: int = 32
    min_child_weight: float = 1.0
    l2: float = 1.0
    gamma: float = 0.0
    loss: str = "log_loss"
    value_bits: int = DEFAULT_VALUE_BITS

    def __post_init__(self) -> None:
        if self.trees < 1 or not 1 <= self.depth <= 12 or self.learning_rate <= 0 or self.min_child_weight < 0 \
                or self.l2 < 0 or self.gamma < 0:
            raise ConfigError("SecureBoost needs trees >= 1, depth 1..12, learning_rate > 0 and min_child_weight, "
                              f"l2, gamma >= 0: got {self}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")


@dataclass
class _Node:
    node_id: int
    depth: int
    rows: np.ndarray  # positions in the training rows, ascending
    split: TreeNode = field(default_factory=lambda: TreeNode(0))


@dataclass
class _Choice:
    """A node's best split: the bank's (column, last bin, missing left) or the partner's candidate index."""

    gain: float
    owner: str
    column: int = -1
    last_bin: int = -1
    missing_left: bool = False
    candidate: int = -1


@dataclass
class _TreeState:
    tree: int
    packer: GradientPacker
    g: np.ndarray
    h: np.ndarray
    g_q: np.ndarray
    h_q: np.ndarray
    open_nodes: list[_Node]
    nodes: dict[int, _Node] = field(default_factory=dict)
    depth: int = 0
    pending: dict[int, _Choice] = field(default_factory=dict)  # this level's chosen splits


class BankParty:
    """The guest: join ids, 0/1 labels, its features (NaN: missing), the Paillier private key."""

    def __init__(self, join_ids: Sequence[str], labels: np.ndarray, features: np.ndarray,
                 parameters: BoostingParameters | None = None, *, private_key: PaillierPrivateKey | None = None,
                 encrypted: bool = True, workers: int | None = None) -> None:
        self.join_ids = tuple(join_ids)
        self._row_of = {join_id: row for row, join_id in enumerate(self.join_ids)}
        if len(self._row_of) != len(self.join_ids):
            raise ValidationError("the bank's join ids must be unique")
        self.labels = np.asarray(labels, dtype=np.float64)
        if self.labels.shape != (len(self.join_ids),) or not np.isin(self.labels, (0.0, 1.0)).all():
            bad = np.flatnonzero(~np.isin(self.labels, (0.0, 1.0)))
            where = f" (row {int(bad[0])}: {float(self.labels[bad[0]])})" if self.labels.ndim == 1 and bad.size else ""
            raise ValidationError(f"labels must be one 0 or 1 per join id{where}")
        self.features = check_features(features, len(self.join_ids), "bank")
        self.parameters = parameters or BoostingParameters()
        self.loss: Loss = LOSSES[self.parameters.loss]
        self.encrypted = encrypted
        self.private_key = private_key if private_key is not None else (generate_keypair()[1] if encrypted else None)
        self.public_key = (self.private_key.public_key if self.private_key is not None
                           else PaillierPublicKey(PLAINTEXT_MODULUS))
        self._pool = WorkerPool(workers) if encrypted else None
        self._rows = np.empty(0, dtype=np.int64)
        self._bins: QuantileBins | None = None
        self._binned = np.empty((0, 0), dtype=np.uint8)
        self.scores = np.empty(0)
        self.model = BankTrees(self.parameters.loss, 0.0, [], self.features.shape[1])
        self._state: _TreeState | None = None
        self.tree_losses: list[float] = []

    def _positions(self, join_ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._row_of[j] for j in join_ids), dtype=np.int64, count=len(join_ids))
        except KeyError as exc:
            raise ValidationError(f"the bank holds no row for join id {exc.args[0]!r}", reason="unknown_join_id") from exc

    # --- training ----------------------------------------------------------------------------------------
    def start(self, model_name: str, version: str, join_ids: Sequence[str] | None = None) -> SbtStart:
        """Fix the training rows, bin our columns, start from the loss' best constant."""
        ids = list(join_ids if join_ids is not None else self.join_ids)
        if len(ids) < 2:
            raise ValidationError("SecureBoost needs at least 2 training rows")
        self._rows = self._positions(ids)
        labels = self.labels[self._rows]
        self._bins = QuantileBins.fit(self.features[self._rows], self.parameters.bins)
        self._binned = self._bins.bin_of(self.features[self._rows])
        initial = self.loss.initial_score(labels)
        self.scores = np.full(self._rows.size, initial)
        self.model = BankTrees(self.parameters.loss, initial, [], self.features.shape[1])
        self.tree_losses = []
        return SbtStart.of(model_name, version, self.public_key.n, self.encrypted, self.parameters.bins, ids)

    def gradients(self, tree: int) -> SbtGradients:
        """g and h of every training row for this tree, packed and encrypted."""
        labels = self.labels[self._rows]
        g, h = self.loss.gradients(labels, self.scores)
        packer = GradientPacker.for_tree(self.public_key, g, h, self.parameters.value_bits)
        g_q, h_q = packer.quantise(g, h)
        plaintexts = packer.row_plaintexts(g_q, h_q)
        if self.encrypted:
            assert self._pool is not None
            values = [int(c) for c in self._pool.encrypt(self.public_key, plaintexts)]
            width = value_width(self.public_key.nsquare)
        else:
            values, width = plaintexts, value_width(self.public_key.n)
        root = _Node(0, 0, np.arange(self._rows.size))
        self._state = _TreeState(tree, packer, g, h, g_q, h_q, [root], {0: root})
        return SbtGradients.of(tree, 0, self.encrypted, packer.slot_bits, width, values)

    @property
    def state(self) -> _TreeState:
        if self._state is None:
            raise ValidationError("no tree is being grown", reason=_BAD)
        return self._state

    def node_request(self) -> SbtNodeRequest | None:
        """This level's nodes to histogram: the smaller of two open siblings summed, the other derived.
        None once no node is open (the tree is grown)."""
        state = self.state
        if not state.open_nodes:
            return None
        by_id = {node.node_id: node for node in state.open_nodes}
        summed: dict[int, Sequence[int]] = {}
        derived: list[tuple[int, int, int]] = []
        for node in state.open_nodes:
            if node.node_id in summed or any(node.node_id == d for d, _, _ in derived):
                continue
            sibling_id = node.node_id + 1 if node.node_id % 2 == 1 else node.node_id - 1
            sibling = by_id.get(sibling_id) if node.node_id else None
            if sibling is None:
                summed[node.node_id] = node.rows.tolist()
                continue
            small, large = (node, sibling) if node.rows.size <= sibling.rows.size else (sibling, node)
            summed[small.node_id] = small.rows.tolist()
            derived.append((large.node_id, (node.node_id - 1) // 2, small.node_id))
        return SbtNodeRequest.of(state.tree, state.depth, summed, derived)

    def choose_splits(self, histograms: SbtHistograms) -> SbtSplits:
        """Decrypt the partner's candidates, add ours, pick each open node's best split by gain."""
        state = self.state
        expected = {node.node_id for node in state.open_nodes}
        if (histograms.tree, histograms.depth) != (state.tree, state.depth) or set(histograms.node_ids) != expected \
                or histograms.encrypted != self.encrypted or histograms.per_value > state.packer.candidates_per_value:
            raise ValidationError("histograms do not answer this level's request", reason=_BAD)
        per_node = histograms.values_of()
        flat = [value for _, values in per_node.values() for value in values]
        if self.encrypted:
            assert self._pool is not None and self.private_key is not None
            plaintexts = self._pool.decrypt(self.private_key, flat)
        else:
            plaintexts = list(flat)
        at = 0
        params = self.parameters
        state.pending = {}
        for node in state.open_nodes:
            count, values = per_node[node.node_id]
            partner_g, partner_h = [], []
            for index in range(len(values)):
                in_value = min(histograms.per_value, count - index * histograms.per_value)
                for g_sum, h_sum in state.packer.unpack_candidates(plaintexts[at], in_value):
                    partner_g.append(g_sum)
                    partner_h.append(h_sum)
                at += 1
            choice = self._best_split(node, np.array(partner_g, dtype=np.int64), np.array(partner_h, dtype=np.int64))
            if choice is not None and choice.gain > max(params.gamma, MIN_GAIN):
                state.pending[node.node_id] = choice
        partner_nodes = [(node_id, choice.candidate) for node_id, choice in state.pending.items() if choice.owner == "partner"]
        return SbtSplits(state.tree, state.depth, tuple(n for n, _ in partner_nodes), tuple(c for _, c in partner_nodes))

    def _own_candidates(self, node: _Node) -> tuple[list[tuple[int, int, bool]], np.ndarray, np.ndarray]:
        state, bins = self.state, self._bins
        assert bins is not None
        binned = self._binned[node.rows]
        g_q, h_q = state.g_q[node.rows], state.h_q[node.rows]
        candidates: list[tuple[int, int, bool]] = []
        g_left: list[np.ndarray] = []
        h_left: list[np.ndarray] = []
        for column, count in enumerate(bins.bin_counts()):
            column_bins = binned[:, column]
            counts = np.bincount(column_bins, minlength=count)
            splits = candidate_splits(counts)
            if not splits:
                continue
            g_bins = np.bincount(column_bins, weights=g_q, minlength=count).astype(np.int64)
            h_bins = np.bincount(column_bins, weights=h_q, minlength=count).astype(np.int64)
            g_cum, h_cum = np.cumsum(g_bins[:-1]), np.cumsum(h_bins[:-1])
            last = np.array([s[0] for s in splits])
            missing_left = np.array([s[1] for s in splits])
            g_left.append(g_cum[last] + missing_left * g_bins[-1])
            h_left.append(h_cum[last] + missing_left * h_bins[-1])
            candidates.extend((column, t, m) for t, m in splits)
        empty = np.empty(0, dtype=np.int64)
        return candidates, np.concatenate(g_left) if g_left else empty, np.concatenate(h_left) if h_left else empty

    def _best_split(self, node: _Node, partner_g: np.ndarray, partner_h: np.ndarray) -> _Choice | None:
        state, params = self.state, self.parameters
        own, own_g, own_h = self._own_candidates(node)
        g_left = np.concatenate([own_g, partner_g])
        h_left = np.concatenate([own_h, partner_h])
        if g_left.size == 0:
            return None
        g_total, h_total = int(state.g_q[node.rows].sum()), int(state.h_q[node.rows].sum())
        gl, hl = state.packer.decode(g_left, h_left)
        gr, hr = state.packer.decode(g_total - g_left, h_total - h_left)
        g_all, h_all = state.packer.decode([g_total], [h_total])
        gain = gl ** 2 / (hl + params.l2) + gr ** 2 / (hr + params.l2) - float(g_all[0] ** 2 / (h_all[0] + params.l2))
        gain[(hl < params.min_child_weight) | (hr < params.min_child_weight)] = -np.inf
        best = int(np.argmax(gain))
        if not np.isfinite(gain[best]):
            return None
        if best < len(own):
            column, last, missing_left = own[best]
            return _Choice(float(gain[best]), "bank", column, last, missing_left)
        return _Choice(float(gain[best]), "partner", candidate=best - len(own))

    def apply_splits(self, split_rows: SbtSplitRows) -> None:
        """Route every split node's rows to its children; open the children that may split further."""
        state, params, bins = self.state, self.parameters, self._bins
        assert bins is not None
        partner = split_rows.left_of()
        expected = {node_id for node_id, choice in state.pending.items() if choice.owner == "partner"}
        if (split_rows.tree, split_rows.depth) != (state.tree, state.depth) or set(partner) != expected:
            raise ValidationError("split rows do not answer this level's partner splits", reason=_BAD)
        next_open: list[_Node] = []
        for node in state.open_nodes:
            choice = state.pending.get(node.node_id)
            if choice is None:
                continue  # stays a leaf
            if choice.owner == "bank":
                binned = self._binned[node.rows, choice.column]
                missing = binned == bins.missing_bin(choice.column)
                left = np.where(missing, choice.missing_left, binned <= choice.last_bin)
                edges = bins.edges[choice.column]
                threshold = float(edges[choice.last_bin]) if choice.last_bin < edges.size else float("inf")
                node.split = TreeNode(node.node_id, "bank", column=choice.column, threshold=threshold,
                                      missing_left=choice.missing_left)
            else:
                split_id, bitmap = partner[node.node_id]
                if split_rows.row_counts[split_rows.node_ids.index(node.node_id)] != node.rows.size:
                    raise ValidationError(f"split rows for node {node.node_id} do not count its rows", reason=_BAD)
                left = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), count=node.rows.size).astype(bool)
                node.split = TreeNode(node.node_id, "partner", split_id=split_id)
                self.model.partner_splits = max(self.model.partner_splits, split_id + 1)
            if left.all() or not left.any():
                raise ValidationError(f"the split of node {node.node_id} sends every row one way", reason=_BAD)
            node.split.left, node.split.right = 2 * node.node_id + 1, 2 * node.node_id + 2
            for child_id, rows in ((node.split.left, node.rows[left]), (node.split.right, node.rows[~left])):
                child = _Node(child_id, node.depth + 1, rows, TreeNode(child_id))
                state.nodes[child_id] = child
                if child.depth < params.depth and rows.size >= 2 and \
                        float(state.h[rows].sum()) >= 2 * params.min_child_weight:
                    next_open.append(child)
        state.open_nodes = next_open
        state.depth += 1
        state.pending = {}

    def end_tree(self) -> float:
        """Leaf weights (learning rate x -G / (H + lambda)), the training scores, the loss after the tree."""
        state, params = self.state, self.parameters
        tree: list[TreeNode] = []
        for node_id in sorted(state.nodes):
            node = state.nodes[node_id]
            # Every node keeps its value: the leaves' score, the others' explain the path (`contributions`).
            weight = -float(state.g[node.rows].sum()) / (float(state.h[node.rows].sum()) + params.l2)
            node.split.weight = params.learning_rate * weight
            if node.split.owner == "leaf":
                self.scores[node.rows] += node.split.weight
            tree.append(node.split)
        self.model.trees.append(tree)
        self._state = None
        loss = self.loss.value(self.labels[self._rows], self.scores)
        self.tree_losses.append(loss)
        return loss

    def finish(self, model_name: str, version: str) -> SbtFinish:
        return SbtFinish(model_name, version, len(self.model.trees))

    # --- scoring -----------------------------------------------------------------------------------------
    def predict_proba(self, join_ids: Sequence[str], decisions: SbtDecisions, model_name: str) -> np.ndarray:
        """P(y = 1) per join id from our features and the partner's bits for `model_name`."""
        if tuple(join_ids) != decisions.join_ids or model_name not in decisions.models:
            raise ValidationError("partner decisions are not for the asked join ids and model", reason=_BAD)
        splits = decisions.split_counts[decisions.models.index(model_name)]
        if splits < self.model.partner_splits:
            raise ValidationError(f"the partner answers {splits} splits, the model has {self.model.partner_splits}",
                                  reason=_BAD)
        bitmaps = decisions.bitmaps(model_name)
        bits = bits_from_bitmaps([bitmaps[j] for j in join_ids], splits)[:, :self.model.partner_splits]
        return self.model.probabilities(self.features[self._positions(join_ids)], bits)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
