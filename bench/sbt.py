"""Federated SecureBoost benchmark: AUC against central xgboost on FATE's data, and seconds per encrypted tree.

- breast and default_credit: the fixed stratified split of the tests (25% test), federated with real
  Paillier (2048-bit) end to end, against xgboost's hist trees on the joined columns with the same
  parameters (30 trees, depth 3, learning rate 0.3, 32 bins, min child weight 1, lambda 1).
- sec_per_tree_default_credit: the mean seconds per tree of that default_credit run (22,500 rows,
  13 bank and 10 partner columns, depth 3). FATE 2.2 takes 195 s per tree on this machine kind.
- sec_per_tree_100k_30x300: one depth-3 tree over 100,000 synthetic rows, 30 bank and 300 partner
  columns, 32 bins. FATE 2.0 takes 114 s per tree for it on 2 x 16 cores.

Both parties run on this machine, each with a pool of 2 processes (they take turns, as the protocol
does). Every tree time includes everything the protocol does: g and h, their packing and encryption
with obfuscators made on the spot (DJN; a deployment makes them ahead of need), the histograms,
subtractions, candidate sums, shuffles and packing, every message through the Avro codec, the
decryptions, the split search and the routing. The notes give seconds per step.

Run from the repository root: `.venv/bin/python -m bench.sbt [--quick]`.
"""
from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import xgboost
from sklearn.metrics import roc_auc_score

from bench.common import parse_args, write_results
from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.paillier import PaillierPrivateKey, generate_keypair
from services.models.datasets import load_vertical, stratified_split
from services.models.secureboost import BankParty, BoostingParameters, BoostingReport, PartnerParty, predict, train_secureboost

CODEC = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
PARAMETERS = BoostingParameters(trees=30, depth=3, learning_rate=0.3, bins=32, min_child_weight=1.0, l2=1.0)


def central_auc(features: np.ndarray, labels: np.ndarray, train_rows: list[int], test_rows: list[int],
                parameters: BoostingParameters) -> float:
    settings = {"max_depth": parameters.depth, "eta": parameters.learning_rate, "max_bin": parameters.bins,
                "min_child_weight": parameters.min_child_weight, "reg_lambda": parameters.l2, "tree_method": "hist",
                "objective": "binary:logistic", "nthread": 2, "seed": 0}
    model = xgboost.train(settings, xgboost.DMatrix(features[train_rows], label=labels[train_rows]), parameters.trees)
    return float(roc_auc_score(labels[test_rows], model.predict(xgboost.DMatrix(features[test_rows]))))


def run(bank: BankParty, partner: PartnerParty, join_ids: list[str] | None = None) -> BoostingReport:
    try:
        return train_secureboost(bank, partner, codec=CODEC, join_ids=join_ids)
    finally:
        bank.close()
        partner.close()


def real_data(name: str, private_key: PaillierPrivateKey, parameters: BoostingParameters) -> tuple[dict[str, float], BoostingReport]:
    bank_table, partner_table = load_vertical(name)
    train, test = stratified_split(bank_table.join_ids, bank_table.labels, test_fraction=0.25, seed=0)
    row_of = {join_id: row for row, join_id in enumerate(bank_table.join_ids)}
    train_rows, test_rows = [row_of[j] for j in train], [row_of[j] for j in test]
    joined = np.hstack([bank_table.features, partner_table.features])
    auc_central = central_auc(joined, bank_table.labels, train_rows, test_rows, parameters)
    bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, parameters, private_key=private_key,
                     workers=2)
    partner = PartnerParty(partner_table.join_ids, partner_table.features, workers=2)
    try:
        report = train_secureboost(bank, partner, codec=CODEC, join_ids=train)
        auc_federated = roc_auc_score(bank_table.labels[test_rows], predict(bank, partner, test))
    finally:
        bank.close()
        partner.close()
    return {f"auc_federated_{name}": round(float(auc_federated), 5), f"auc_central_{name}": round(auc_central, 5)}, report


def synthetic_tree(rows: int, bank_columns: int, partner_columns: int, private_key: PaillierPrivateKey) -> BoostingReport:
    rng = np.random.default_rng(0)
    ids = [f"{i:08d}" for i in range(rows)]
    x_bank = rng.normal(size=(rows, bank_columns))
    x_partner = rng.normal(size=(rows, partner_columns))
    logits = x_bank[:, :3].sum(axis=1) + np.abs(x_partner[:, :5]).sum(axis=1) - 4 + rng.normal(size=rows)
    labels = (logits > 0).astype(int)
    one_tree = BoostingParameters(trees=1, depth=3, bins=32)
    bank = BankParty(ids, labels, x_bank, one_tree, private_key=private_key, workers=2)
    partner = PartnerParty(ids, x_partner, workers=2, shuffle=random.Random(0))
    try:
        # A warm-up tree on a small slice starts the worker processes and builds their comb tables.
        train_secureboost(bank, partner, codec=CODEC, join_ids=ids[:512])
        return train_secureboost(bank, partner, codec=CODEC)
    finally:
        bank.close()
        partner.close()


def steps(report: BoostingReport) -> dict[str, float]:
    return {step: round(seconds, 2) for step, seconds in report.step_seconds.items()}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    _, private_key = generate_keypair(2048)
    metrics: dict[str, float] = {}
    notes: dict[str, Any] = {"key_bits": 2048, "quick": args.quick, "split": "stratified 75/25, seed 0",
                             "parameters": {"trees": PARAMETERS.trees, "depth": PARAMETERS.depth,
                                            "learning_rate": PARAMETERS.learning_rate, "bins": PARAMETERS.bins,
                                            "min_child_weight": PARAMETERS.min_child_weight, "l2": PARAMETERS.l2,
                                            "value_bits": PARAMETERS.value_bits},
                             "baseline": f"xgboost {xgboost.__version__} hist, same parameters, joined columns"}
    for name in ("breast", "default_credit"):
        parameters = PARAMETERS
        if args.quick:
            parameters = BoostingParameters(**{**PARAMETERS.__dict__, "trees": 3})
        started = time.perf_counter()
        aucs, report = real_data(name, private_key, parameters)
        metrics.update(aucs)
        notes[name] = {"trees": len(report.tree_seconds), "seconds": round(time.perf_counter() - started, 1),
                       "sec_per_tree": round(float(np.mean(report.tree_seconds)), 2), "step_seconds": steps(report),
                       "mb_to_partner": round(report.bytes_to_partner / 1e6, 1),
                       "mb_to_bank": round(report.bytes_to_bank / 1e6, 2)}
        if name == "default_credit":
            metrics["sec_per_tree_default_credit"] = notes[name]["sec_per_tree"]

    rows = 10_000 if args.quick else 100_000
    size = "10k" if args.quick else "100k"
    report = synthetic_tree(rows, 30, 300, private_key)
    metrics[f"sec_per_tree_{size}_30x300"] = round(report.tree_seconds[0], 1)
    notes["synthetic"] = {"rows": rows, "bank_columns": 30, "partner_columns": 300, "depth": 3, "bins": 32,
                          "fate_2x16_cores_s": 114, "step_seconds": steps(report),
                          "mb_to_partner": round(report.bytes_to_partner / 1e6, 1),
                          "mb_to_bank": round(report.bytes_to_bank / 1e6, 2)}
    write_results("sbt", metrics, notes)


if __name__ == "__main__":
    main()
