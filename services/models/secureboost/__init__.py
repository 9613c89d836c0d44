"""Federated SecureBoost: gradient boosted trees, vertical and two-party, as FATE's hetero SecureBoost.

The bank (guest) holds the labels, its features and the Paillier private key; the partner (host)
holds its features. Each party cuts its own columns into quantile bins (`binning`); the edges
never leave it. Per tree (`training.train_secureboost` drives both sides in one process, every
message through the codec):

1. bank -> partner `SbtGradients`: [[g_i + h_i 2^s]] per training row, g and h of the loss
   (`losses`: log loss or exponential loss) in fixed point in two slots of one plaintext
   (`packing`).
2. per level, bank -> partner `SbtNodeRequest`: the rows of the smaller child of each pair (the
   other is parent minus it).
3. partner -> bank `SbtHistograms`: per node, [[(G_L, H_L)]] of every candidate split of every
   partner column, cumulative over its bins, shuffled, several to a ciphertext (`histogram`:
   the cost centre).
4. The bank decrypts, adds its own candidates in clear and keeps each node's best split by
   xgboost's gain; bank -> partner `SbtSplits`: the winning partner candidates' indices.
5. partner -> bank `SbtSplitRows`: the split id it filed (column, threshold, missing side stay in
   its `tree.SplitTable`) and the node's rows that go left. The bank routes, grows the next level,
   and at the end weighs the leaves: -G / (H + lambda) times the learning rate.

What each side learns: the `sbt` rows of the table of message kinds (services/protocol/kinds.py,
rendered in docs/protocols.md). In short: the partner learns every node's instance space (FATE's
leak; so the partitions the bank's splits make, not their columns or thresholds) and which of its
candidates won, never a label, gradient, leaf weight or score; the bank learns the (G_L, H_L) sums
of the partner's candidates in an order naming neither column nor threshold, and the partition of
each chosen partner split, never a partner value or threshold. At scoring time the partner sends
one bit per split and person (`SbtDecisions`), the bank walks its trees (`tree.BankTrees`).

>>> import random
>>> import numpy as np
>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> rng = np.random.default_rng(0)
>>> ids = [f"c{i}" for i in range(400)]
>>> x_bank, x_partner = rng.normal(size=(400, 2)), rng.normal(size=(400, 3))
>>> y = (x_bank[:, 0] + x_partner[:, 0] > 0).astype(int)
>>> bank = BankParty(ids, y, x_bank, BoostingParameters(trees=5, depth=2), encrypted=False)
>>> partner = PartnerParty(ids, x_partner, shuffle=random.Random(0))
>>> report = train_secureboost(bank, partner, codec=AvroCodec(SchemaStore(REPO_ROOT / "schemas")))
>>> bool(((predict(bank, partner, ids) > 0.5) == y).mean() > 0.85)
True
"""
from services.models.secureboost.guest import BankParty, BoostingParameters
from services.models.secureboost.host import PartnerParty
from services.models.secureboost.training import BoostingReport, predict, train_secureboost
from services.models.secureboost.tree import BankTrees, SplitRule, SplitTable, TreeNode

__all__ = ["BankParty", "BankTrees", "BoostingParameters", "BoostingReport", "PartnerParty", "SplitRule", "SplitTable",
           "TreeNode", "predict", "train_secureboost"]
