"""Federated LR benchmark: AUC against scikit-learn on FATE's data, and seconds per encrypted epoch.

- breast and default_credit: the fixed stratified split of the tests (25% test), federated with
  real Paillier (2048-bit) end to end at fedlr's defaults (each party's own preparation fitted on
  its training rows, the decaying step, the stopping rule), against scikit-learn's
  LogisticRegression on the joined data as FATE ships it (`auc_central_*`, comparable with earlier
  runs) and on the same prepared rows (in the notes).
- raw: `services.models.raw_shaped` (8,000 bank rows, 75 % of them at the bureau, which holds
  1,200 more; 2,000 with --quick), aligned by PSI and trained with Paillier 2048 as
  `cipherstream federated evaluate` does (30 % test): `auc_federated_raw` beside central LR on
  the same joined, prepared rows (`auc_central_raw`) and the bank's prepared features alone
  (`auc_bank_only_raw`).
- epoch_s_100k_30x300: 100,000 synthetic rows, 30 bank and 300 partner features, one encrypted
  epoch of mini-batches of 25,000 rows, partner features quantised to 12 bits (8 bits in the notes),
  both parties on this machine (each with a pool of 2 processes; they take turns, as the protocol does). FATE 2.0 takes 139 s for it on 2 x 16 cores.

Every epoch time includes everything the protocol does: residual encryption with obfuscators
made on the spot (DJN, data-independent: a deployment makes them ahead of need, so the notes
also give the time without them), the kernel, masks, decryption and every message's bytes.

Run from the repository root: `.venv/bin/python -m bench.fedlr [--quick]`.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bench.common import parse_args, write_results
from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.paillier import generate_keypair
from services.models.datasets import load_vertical, stratified_split
from services.models.evaluation import EvaluationSettings, evaluate
from services.models.fedlr import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_LEARNING_RATE_DECAY,
    DEFAULT_MAX_EPOCHS,
    BankParty,
    PartnerParty,
    TrainingReport,
    predict,
    train_federated,
)
from services.models.preparation import Preparation
from services.models.raw_shaped import raw_shaped

CODEC = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
"""Every message crosses through the one codec, as over the exchange topics."""

def central_auc(joined: np.ndarray, labels: np.ndarray, train_rows: list[int], test_rows: list[int]) -> float:
    central = LogisticRegression(max_iter=5000).fit(joined[train_rows], labels[train_rows])
    return float(roc_auc_score(labels[test_rows], central.predict_proba(joined[test_rows])[:, 1]))


def real_data(name: str, private_key: Any, quick: bool) -> tuple[dict[str, float], TrainingReport, float]:
    """FATE's set at fedlr's defaults; (metrics, report, central AUC on the same prepared rows)."""
    bank_table, partner_table = load_vertical(name)
    train, test = stratified_split(bank_table.join_ids, bank_table.labels, test_fraction=0.25, seed=0)
    row_of = {join_id: row for row, join_id in enumerate(bank_table.join_ids)}
    train_rows, test_rows = [row_of[j] for j in train], [row_of[j] for j in test]
    bank_preparation = Preparation.fit(bank_table.features[train_rows])
    partner_preparation = Preparation.fit(partner_table.features[train_rows])
    labels = bank_table.labels
    auc_central = central_auc(np.hstack([bank_table.features, partner_table.features]), labels, train_rows, test_rows)
    auc_central_prepared = central_auc(np.hstack([bank_preparation.transform(bank_table.features),
                                                  partner_preparation.transform(partner_table.features)]),
                                       labels, train_rows, test_rows)

    epochs = 2 if quick and name == "default_credit" else DEFAULT_MAX_EPOCHS
    bank = BankParty(bank_table.join_ids, labels, bank_table.features, preparation=bank_preparation,
                     private_key=private_key, shuffle_seed=1, workers=2)
    partner = PartnerParty(partner_table.join_ids, partner_table.features, preparation=partner_preparation, workers=2)
    try:
        report = train_federated(bank, partner, epochs=epochs, codec=CODEC, join_ids=train)
        auc_federated = roc_auc_score(labels[test_rows], predict(bank, partner, test))
    finally:
        bank.close()
        partner.close()
    return {f"auc_federated_{name}": round(float(auc_federated), 5),
            f"auc_central_{name}": round(float(auc_central), 5)}, report, round(auc_central_prepared, 5)


def raw_data(quick: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """The raw-shaped set through `evaluate`: PSI, each party's preparation, Paillier 2048, the baselines."""
    bank_rows = 2_000 if quick else 8_000
    guest, host = raw_shaped(bank_rows=bank_rows, seed=0)
    result = evaluate(guest, host, EvaluationSettings(workers=2), CODEC)
    metrics = {"auc_federated_raw": result.federated.auc, "auc_central_raw": result.central.auc,
               "auc_bank_only_raw": result.bank_only.auc}
    notes = {"rows": result.rows, "ks": {"federated": result.federated.ks, "central": result.central.ks,
                                         "bank_only": result.bank_only.ks},
             "epochs": result.training["epochs"], "converged": result.training["converged"],
             "batch_size": result.training["batch_size"], "seconds": result.seconds,
             "mb": {name: round(count / 1e6, 2) for name, count in result.bytes.items()},
             "preparation": result.preparation}
    return metrics, notes


def synthetic_epoch(rows: int, bank_features: int, partner_features: int, batch_size: int, feature_bits: int,
                    private_key: Any) -> TrainingReport:
    rng = np.random.default_rng(0)
    ids = [f"{i:08d}" for i in range(rows)]
    x_bank = rng.normal(size=(rows, bank_features))
    x_partner = rng.normal(size=(rows, partner_features)).astype(np.float64)
    true_weights = rng.normal(size=bank_features + partner_features) / np.sqrt(bank_features + partner_features)
    logits = np.hstack([x_bank, x_partner]) @ true_weights
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(int)
    bank = BankParty(ids, labels, x_bank, private_key=private_key, learning_rate=0.15, shuffle_seed=1, workers=2)
    partner = PartnerParty(ids, x_partner, feature_bits=feature_bits, workers=2)
    try:
        # One warm-up step on a small slice starts the worker processes and builds their comb tables.
        train_federated(bank, partner, "batch", 1, 0, codec=CODEC, join_ids=ids[:bank.min_batch_size * 2])
        return train_federated(bank, partner, "minibatch", 1, batch_size, codec=CODEC)
    finally:
        bank.close()
        partner.close()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    _, private_key = generate_keypair(2048)
    metrics: dict[str, float] = {}
    notes: dict[str, Any] = {"key_bits": 2048, "quick": args.quick, "split": "stratified 75/25, seed 0"}

    for name in ("breast", "default_credit"):
        started = time.perf_counter()
        aucs, report, auc_central_prepared = real_data(name, private_key, args.quick)
        metrics.update(aucs)
        notes[name] = {"mode": report.mode, "epochs": len(report.epoch_seconds), "converged": report.converged,
                       "batch_size": report.batch_size, "learning_rate": DEFAULT_LEARNING_RATE,
                       "learning_rate_decay": DEFAULT_LEARNING_RATE_DECAY, "feature_bits": 12,
                       "auc_central_same_prepared_rows": auc_central_prepared,
                       "seconds": round(time.perf_counter() - started, 1),
                       "mb_to_partner": round(report.bytes_to_partner / 1e6, 1),
                       "mb_to_bank": round(report.bytes_to_bank / 1e6, 2)}
        if name == "default_credit":
            metrics["epoch_s_default_credit"] = round(float(np.mean(report.epoch_seconds)), 2)

    raw_metrics, notes["raw"] = raw_data(args.quick)
    metrics.update(raw_metrics)

    rows, batch_size = (10_000, 10_000) if args.quick else (100_000, 25_000)
    size = "10k" if args.quick else "100k"
    notes["synthetic"] = {"rows": rows, "bank_features": 30, "partner_features": 300, "batch_size": batch_size,
                          "fate_2x16_cores_s": 139}
    for feature_bits in (12, 8):
        report = synthetic_epoch(rows, 30, 300, batch_size, feature_bits=feature_bits, private_key=private_key)
        if feature_bits == 12:  # the default, as in the accuracy runs
            metrics[f"epoch_s_{size}_30x300"] = round(report.epoch_seconds[0], 1)
        notes["synthetic"][f"{feature_bits}_bits"] = {
            "epoch_s": round(report.epoch_seconds[0], 1),
            "step_seconds": {k: round(v, 2) for k, v in report.step_seconds.items()},
            "mb_to_partner": round(report.bytes_to_partner / 1e6, 1),
            "mb_to_bank": round(report.bytes_to_bank / 1e6, 2)}
    write_results("fedlr", metrics, notes)


if __name__ == "__main__":
    main()
