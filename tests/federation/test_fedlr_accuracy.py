"""On FATE's real data, the federated model's test AUC is within 0.005 of scikit-learn on the joined data.

breast runs with real encryption end to end. default_credit (22,500 training rows) runs the same
code path with the plaintext protocol math (same quantisation, fixed point, masks and bytes; no
Paillier), and its first batches also run encrypted and must give bit-identical weights: the
full encrypted run is `bench/fedlr.py` (about 13 s per epoch here).
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.core.avro import AvroCodec
from services.crypto.paillier import PaillierPrivateKey
from services.models.datasets import GuestTable, HostTable, load_vertical, stratified_split
from services.models.fedlr import BankParty, PartnerParty, predict, train_federated

AUC_TOLERANCE = 0.005


def split(name: str) -> tuple[GuestTable, HostTable, list[str], list[str]]:
    bank_table, partner_table = load_vertical(name)
    assert bank_table.join_ids == partner_table.join_ids
    train, test = stratified_split(bank_table.join_ids, bank_table.labels, test_fraction=0.25, seed=0)
    return bank_table, partner_table, train, test


def central_auc(bank_table: GuestTable, partner_table: HostTable, train: list[str], test: list[str]) -> float:
    """scikit-learn's LogisticRegression (defaults) on the joined columns: the baseline nobody could run."""
    row_of = {join_id: row for row, join_id in enumerate(bank_table.join_ids)}
    joined = np.hstack([bank_table.features, partner_table.features])
    train_rows, test_rows = [row_of[j] for j in train], [row_of[j] for j in test]
    model = LogisticRegression(max_iter=2000).fit(joined[train_rows], bank_table.labels[train_rows])
    return float(roc_auc_score(bank_table.labels[test_rows], model.predict_proba(joined[test_rows])[:, 1]))


def federated_auc(bank: BankParty, partner: PartnerParty, bank_table: GuestTable, test: list[str]) -> float:
    row_of = {join_id: row for row, join_id in enumerate(bank_table.join_ids)}
    labels = bank_table.labels[[row_of[j] for j in test]]
    return float(roc_auc_score(labels, predict(bank, partner, test)))


@pytest.mark.slow  # every epoch under real 2048-bit Paillier
def test_breast_federated_auc_with_encryption_matches_central(bank_private_key: PaillierPrivateKey,
                                                               codec: AvroCodec) -> None:
    bank_table, partner_table, train, test = split("breast")
    bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, private_key=bank_private_key,
                     learning_rate=1.0, workers=2)
    partner = PartnerParty(partner_table.join_ids, partner_table.features, workers=2)
    try:
        report = train_federated(bank, partner, "batch", epochs=60, batch_size=0, codec=codec, join_ids=train)
    finally:
        bank.close()
        partner.close()
    assert report.losses[-1] < report.losses[0]
    central = central_auc(bank_table, partner_table, train, test)
    federated = federated_auc(bank, partner, bank_table, test)
    assert central > 0.98
    assert abs(federated - central) <= AUC_TOLERANCE, (federated, central)


def test_default_credit_federated_auc_matches_central(codec: AvroCodec) -> None:
    bank_table, partner_table, train, test = split("default_credit")
    bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, encrypted=False,
                     learning_rate=0.15, shuffle_seed=1)
    partner = PartnerParty(partner_table.join_ids, partner_table.features)
    train_federated(bank, partner, "minibatch", epochs=3, batch_size=256, codec=codec, join_ids=train)
    central = central_auc(bank_table, partner_table, train, test)
    federated = federated_auc(bank, partner, bank_table, test)
    assert central > 0.7
    assert abs(federated - central) <= AUC_TOLERANCE, (federated, central)


@pytest.mark.parametrize("mode", ["minibatch", "online"])
def test_default_credit_encrypted_batches_equal_the_plaintext_protocol(bank_private_key: PaillierPrivateKey,
                                                                       mode: str, codec: AvroCodec) -> None:
    bank_table, partner_table, train, _ = split("default_credit")
    rows = train[:768]  # three batches of 256
    weights = []
    for private_key in (bank_private_key, None):
        bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, private_key=private_key,
                         encrypted=private_key is not None, learning_rate=0.15, shuffle_seed=1, workers=2)
        partner = PartnerParty(partner_table.join_ids, partner_table.features, workers=2)
        try:
            report = train_federated(bank, partner, mode, epochs=1, batch_size=256, codec=codec, join_ids=rows)  # type: ignore[arg-type]
        finally:
            bank.close()
            partner.close()
        assert report.batches == 3
        weights.append((bank.weights.copy(), bank.bias, partner.weights.copy()))
    (bank_encrypted, bias_encrypted, partner_encrypted), (bank_plain, bias_plain, partner_plain) = weights
    assert np.array_equal(partner_encrypted, partner_plain) and np.abs(partner_plain).min() > 0
    assert np.array_equal(bank_encrypted, bank_plain) and bias_encrypted == bias_plain
