"""The partner's side of SecureBoost (the host): its features, its bins, its split table.

It never sees a label, a gradient or a bank feature: only ciphertexts of packed (g, h), the
rows of each node (FATE's known leak: node instance spaces), which of its own candidates won,
and at scoring time the join ids to answer for. What it sends: encrypted histogram sums per
candidate (shuffled, so their order names neither column nor threshold), the rows going left of
its chosen splits, and at scoring time one bit per split and person.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from gmpy2 import mpz

from services.core.errors import ValidationError
from services.crypto.paillier import PaillierPublicKey
from services.models.kernel import ciphertexts_from_bytes, ciphertexts_to_bytes
from services.models.secureboost.binning import QuantileBins, check_features
from services.models.secureboost.histogram import (
    Arithmetic,
    CipherArithmetic,
    NodeHistogram,
    PlainArithmetic,
    bin_products,
    bin_products_task,
    candidate_splits,
    compress,
    compress_task,
    cumulative_sums,
)
from services.models.secureboost.packing import candidates_per_value, row_slots, slot_layout, value_width
from services.models.secureboost.tree import SplitRule, SplitTable
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


@dataclass
class _Training:
    start: SbtStart
    rows: np.ndarray  # training row -> our row
    bins: QuantileBins
    binned: np.ndarray  # (training rows, columns) bin index
    digits: np.ndarray  # the same, renumbered: digit 0 is each column's most populated bin


@dataclass
class _Tree:
    tree: int
    encrypted: bool
    slot_bits: int
    ciphertexts: list[mpz]  # encrypted: the gradients; plaintext check: unused
    blob: bytes  # the gradients as they came, fixed width
    width: int
    g_plain: np.ndarray  # plaintext check only: g_q, h_q per training row
    h_plain: np.ndarray
    level_rows: dict[int, np.ndarray]  # node id -> its training rows, ascending (this level and the last)
    histograms: dict[int, NodeHistogram[object]]
    candidates: dict[int, list[tuple[int, int, bool]]]  # node id -> (column, last bin left, missing left), as sent


class PartnerParty:
    """The host: features by join id, the bins it cuts them into, and the split table it builds.

    `shuffle` orders the candidates the bank sees (a secure default; seeded in tests so two runs
    send the same order).
    """

    def __init__(self, join_ids: Sequence[str], features: np.ndarray, *, workers: int | None = None,
                 shuffle: random.Random | None = None) -> None:
        self.join_ids = tuple(join_ids)
        self._row_of = {join_id: row for row, join_id in enumerate(self.join_ids)}
        if len(self._row_of) != len(self.join_ids):
            raise ValidationError("the partner's join ids must be unique")
        self.features = check_features(features, len(self.join_ids), "partner")
        self._workers = workers
        self._pool: WorkerPool | None = None
        self._shuffle = shuffle or random.SystemRandom()
        self._training: _Training | None = None
        self._tree: _Tree | None = None
        self._chunks: list[SbtGradients] = []
        self._start_chunks: list[SbtStart] = []
        self.split_table = SplitTable()
        self.models: dict[str, tuple[str, SplitTable]] = {}  # model name -> (version, its split table)

    def _rows(self, join_ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._row_of[j] for j in join_ids), dtype=np.int64, count=len(join_ids))
        except KeyError as exc:
            raise ValidationError(f"the partner holds no row for join id {exc.args[0]!r}", reason="unknown_join_id") from exc

    # --- training ----------------------------------------------------------------------------------------
    def on_start(self, start: SbtStart) -> None:
        """The start of a training, whole or in chunks (in order); binning waits for the last chunk."""
        if start.offset == 0:
            self._start_chunks = [start]
        else:
            self._start_chunks.append(start)
        if start.offset + len(start.join_ids) < start.total_rows:
            return
        first, *rest = self._start_chunks
        start = first.joined(rest)
        self._start_chunks = []
        rows = self._rows(start.join_ids)
        training_features = self.features[rows]
        bins = QuantileBins.fit(training_features, start.bins)
        binned = bins.bin_of(training_features)
        self._training = _Training(start, rows, bins, binned, bins.digits(binned))
        self.split_table = SplitTable()
        if start.encrypted and self._pool is None:
            self._pool = WorkerPool(self._workers)

    @property
    def training(self) -> _Training:
        if self._training is None:
            raise ValidationError("SecureBoost training has not started (no SbtStart received)", reason=_BAD)
        return self._training

    @property
    def public_key(self) -> PaillierPublicKey:
        return PaillierPublicKey(self.training.start.modulus)

    def on_gradients(self, gradients: SbtGradients) -> None:
        """A tree's gradients, whole or in chunks (in order, from offset 0); the tree starts once all are in."""
        training = self.training
        key = self.public_key
        expected = value_width(key.nsquare if gradients.encrypted else key.n)
        if gradients.encrypted != training.start.encrypted or gradients.width != expected:
            raise ValidationError(f"gradients of width {gradients.width} (encrypted: {gradients.encrypted}) do not "
                                  f"fit this training's key", reason=_BAD)
        if gradients.offset == 0:
            self._chunks, self._tree = [gradients], None  # a new tree: the last one's state is done with
        elif not self._chunks or (self._chunks[-1].tree, self._chunks[-1].offset + self._chunks[-1].rows) != (
                gradients.tree, gradients.offset):
            raise ValidationError(f"gradient chunk of tree {gradients.tree} at row {gradients.offset} out of order",
                                  reason=_BAD)
        else:
            self._chunks.append(gradients)
        received = gradients.offset + gradients.rows
        if received > training.rows.size:
            raise ValidationError(f"gradients for {received} rows, training has {training.rows.size}", reason=_BAD)
        if received < training.rows.size:
            return
        blob = b"".join(chunk.packed_values for chunk in self._chunks)
        self._chunks = []
        empty = np.empty(0, dtype=np.int64)
        g_plain, h_plain, ciphertexts = empty, empty, []
        if gradients.encrypted:
            if self._pool is None or self._pool.workers == 1:
                ciphertexts = ciphertexts_from_bytes(blob, gradients.width)
        else:  # the plaintext check: read the slots, sum them with numpy, exactly
            values = [int.from_bytes(blob[i:i + gradients.width], "big") for i in range(0, len(blob), gradients.width)]
            g_plain, h_plain = row_slots(values, slot_layout(key, gradients.slot_bits, training.rows.size))
        self._tree = _Tree(gradients.tree, gradients.encrypted, gradients.slot_bits, ciphertexts, blob,
                           gradients.width, g_plain, h_plain, {0: np.arange(training.rows.size)}, {}, {})

    @property
    def tree(self) -> _Tree:
        if self._tree is None:
            raise ValidationError("no gradients received for this tree", reason=_BAD)
        return self._tree

    def _arithmetic(self) -> Arithmetic[object]:
        key = self.public_key
        arithmetic = CipherArithmetic(key.nsquare_mpz) if self.tree.encrypted else PlainArithmetic(key.n)
        return arithmetic  # type: ignore[return-value]

    def histograms(self, request: SbtNodeRequest) -> SbtHistograms:
        """Per requested node, its candidates' (G_L, H_L) sums, shuffled and packed."""
        tree, training = self.tree, self.training
        if request.tree != tree.tree:
            raise ValidationError(f"node request for tree {request.tree}, gradients are for {tree.tree}", reason=_BAD)
        node_rows = {node_id: np.asarray(rows, dtype=np.int64) for node_id, rows in request.rows_of().items()}
        for rows in node_rows.values():
            if rows.size and (rows.max() >= training.rows.size or np.any(np.diff(rows) <= 0)):
                raise ValidationError("node rows must be ascending positions of training rows", reason=_BAD)
        built = self._sum_nodes(node_rows)
        arithmetic = self._arithmetic()
        for derived, parent, sibling in zip(request.derived_ids, request.derived_parents, request.derived_siblings):
            if parent not in tree.histograms or parent not in tree.level_rows:
                raise ValidationError(f"node {derived}'s parent {parent} has no histogram here", reason=_BAD)
            built[derived] = tree.histograms[parent].minus(built[sibling], arithmetic)
            node_rows[derived] = np.setdiff1d(tree.level_rows[parent], node_rows[sibling], assume_unique=True)
        key = self.public_key
        packer = slot_layout(key, tree.slot_bits, training.rows.size)
        per_value, shift = candidates_per_value(packer), 2 * tree.slot_bits
        node_candidates: dict[int, list[tuple[int, int, bool]]] = {}
        node_sums: dict[int, list[object]] = {}
        for node_id, histogram in built.items():
            binned = training.binned[node_rows[node_id]]
            candidates: list[tuple[int, int, bool]] = []
            sums: list[object] = []
            for column, column_bins in enumerate(histogram.bins):
                counts = np.bincount(binned[:, column], minlength=len(column_bins))
                column_sums = cumulative_sums(column_bins, counts, arithmetic)
                candidates.extend((column, last, missing_left) for last, missing_left in candidate_splits(counts))
                sums.extend(column_sums)
            order = list(range(len(candidates)))
            self._shuffle.shuffle(order)
            node_candidates[node_id] = [candidates[i] for i in order]
            node_sums[node_id] = [sums[i] for i in order]
        packed = self._compress(node_sums, per_value, shift, arithmetic)
        tree.level_rows, tree.histograms, tree.candidates = node_rows, built, node_candidates
        width = value_width(key.nsquare if tree.encrypted else key.n)
        return SbtHistograms.of(tree.tree, request.depth, tree.encrypted, per_value,
                                {node_id: (len(node_candidates[node_id]), [int(v) for v in packed[node_id]])  # type: ignore[call-overload]
                                 for node_id in built}, width)

    def _sum_nodes(self, node_rows: dict[int, np.ndarray]) -> dict[int, NodeHistogram[object]]:
        """Per node, per column, per bin: the sum of its rows' packed (g, h)."""
        tree, training = self.tree, self.training
        bins = training.bins.bin_counts()
        out: dict[int, NodeHistogram[object]] = {}
        if not tree.encrypted:
            n, shift = self.public_key.n, tree.slot_bits
            for node_id, rows in node_rows.items():
                columns: list[list[object]] = []
                for column, count in enumerate(bins):
                    binned = training.binned[rows, column]
                    g = np.bincount(binned, weights=tree.g_plain[rows], minlength=count)  # exact: |sums| < 2^53
                    h = np.bincount(binned, weights=tree.h_plain[rows], minlength=count)
                    columns.append([(int(gs) + (int(hs) << shift)) % n for gs, hs in zip(g.tolist(), h.tolist())])
                out[node_id] = NodeHistogram(columns)
            return out
        for node_id, per_column in self._by_digit(node_rows, bins).items():
            out[node_id] = NodeHistogram([[column[digit] for digit in training.bins.digit_of_bin[c].tolist()]
                                          for c, column in enumerate(per_column)])
        return out

    def _by_digit(self, node_rows: dict[int, np.ndarray], bins: tuple[int, ...]) -> dict[int, list[list[mpz]]]:
        tree, training = self.tree, self.training
        nsquare = self.public_key.nsquare_mpz
        pool = self._pool
        if pool is None or pool.workers == 1:
            return {node_id: bin_products([tree.ciphertexts[r] for r in rows.tolist()], training.digits[rows], bins, nsquare)
                    for node_id, rows in node_rows.items()}
        width = tree.width
        order = list(node_rows)
        all_rows = np.concatenate([node_rows[node_id] for node_id in order])
        blob = b"".join(tree.blob[r * width:(r + 1) * width] for r in all_rows.tolist())
        digits = training.digits[all_rows]
        columns = digits.shape[1]
        step = math.ceil(columns / pool.workers)
        slices = [range(start, min(start + step, columns)) for start in range(0, columns, step)]
        nsquare_bytes = int(nsquare).to_bytes(width, "big")
        sizes = [int(node_rows[node_id].size) for node_id in order]
        results = pool.map(bin_products_task, [(blob, width, nsquare_bytes, sizes, digits[:, s.start:s.stop],
                                                bins[s.start:s.stop]) for s in slices])
        out: dict[int, list[list[mpz]]] = {node_id: [] for node_id in order}
        for columns_slice, result in zip(slices, results):
            values = ciphertexts_from_bytes(result, width)
            at = 0
            for node_id in order:
                for column in columns_slice:
                    out[node_id].append(values[at:at + bins[column]])
                    at += bins[column]
        return out

    def _compress(self, node_sums: dict[int, list[object]], per_value: int, shift: int,
                  arithmetic: Arithmetic[object]) -> dict[int, list[object]]:
        pool = self._pool
        if not self.tree.encrypted or pool is None or pool.workers == 1:
            return {node_id: compress(sums, per_value, shift, arithmetic) for node_id, sums in node_sums.items()}
        width = self.tree.width
        groups = [(node_id, sums[start:start + per_value]) for node_id, sums in node_sums.items()
                  for start in range(0, len(sums), per_value)]
        step = math.ceil(len(groups) / pool.workers) if groups else 1
        chunks = [groups[start:start + step] for start in range(0, len(groups), step)]
        nsquare_bytes = int(self.public_key.nsquare).to_bytes(width, "big")
        tasks = [(ciphertexts_to_bytes([value for _, group in chunk for value in group], width),
                  width, nsquare_bytes, [len(group) for _, group in chunk], shift) for chunk in chunks]
        out: dict[int, list[object]] = {node_id: [] for node_id in node_sums}
        for chunk, result in zip(chunks, pool.map(compress_task, tasks)):
            for (node_id, _), value in zip(chunk, ciphertexts_from_bytes(result, width)):
                out[node_id].append(value)
        return out

    def split_rows(self, splits: SbtSplits) -> SbtSplitRows:
        """Record each chosen candidate in the split table; say which of the node's rows go left."""
        tree, training = self.tree, self.training
        if splits.tree != tree.tree:
            raise ValidationError(f"splits for tree {splits.tree}, this tree is {tree.tree}", reason=_BAD)
        split_ids, counts, bitmaps = [], [], []
        for node_id, candidate in zip(splits.node_ids, splits.candidates):
            candidates = tree.candidates.get(node_id)
            if candidates is None or candidate >= len(candidates):
                raise ValidationError(f"node {node_id} has no candidate {candidate}", reason=_BAD)
            column, last, missing_left = candidates[candidate]
            edges = training.bins.edges[column]
            threshold = float(edges[last]) if last < edges.size else math.inf
            split_ids.append(self.split_table.add(SplitRule(column, threshold, missing_left)))
            rows = tree.level_rows[node_id]
            binned = training.binned[rows, column]
            missing = binned == training.bins.missing_bin(column)
            left = np.where(missing, missing_left, binned <= last)
            counts.append(int(rows.size))
            bitmaps.append(np.packbits(left).tobytes())
        return SbtSplitRows(tree.tree, splits.depth, splits.node_ids, tuple(split_ids), tuple(counts), b"".join(bitmaps))

    def on_finish(self, finish: SbtFinish) -> None:
        """Keep the split table as the partner half of the version."""
        start = self.training.start
        if (finish.model_name, finish.version) != (start.model_name, start.version):
            raise ValidationError("finish for another training than the one started", reason=_BAD)
        self.models[finish.model_name] = (finish.version, self.split_table)
        self._tree = None

    # --- scoring -----------------------------------------------------------------------------------------
    def decisions(self, join_ids: Sequence[str], models: Sequence[str] | None = None) -> SbtDecisions:
        """Per join id and model, one bit per split of the model's table: all the bank gets at scoring time."""
        names = sorted(self.models) if models is None else list(models)
        rows = self._rows(join_ids)
        tables = [self.models[name][1] for name in names]
        packed = [np.packbits(table.decisions(self.features[rows]), axis=1) if table.rules
                  else np.zeros((rows.size, 0), dtype=np.uint8) for table in tables]
        body = np.hstack(packed).tobytes() if packed else b""
        return SbtDecisions(tuple(names), tuple(self.models[name][0] for name in names),
                            tuple(len(table.rules) for table in tables), tuple(join_ids), body)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
