"""Raw data in, sound model out: on a bank and bureau split shaped like real exports (skewed, binary,
heavy-tailed amounts in the thousands, missing values, ids partly shared) and aligned by the real PSI,
federated LR at its defaults lands within 0.01 test AUC of central LR on the same joined, prepared rows
and clearly above the bank's features alone. Without the preparation, the old defaults diverge."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.core.avro import AvroCodec
from services.crypto.paillier import PaillierPrivateKey
from services.models.datasets import GuestTable, HostTable, stratified_split
from services.models.evaluation import EvaluationSettings, align, evaluate
from services.models.fedlr import BankParty, PartnerParty, predict, train_federated
from services.models.preparation import Preparation
from services.models.raw_shaped import raw_shaped

AUC_TOLERANCE = 0.01
PARTNER_LIFT = 0.03


def test_psi_aligns_exactly_the_people_both_hold(codec: AvroCodec) -> None:
    bank, partner = raw_shaped(bank_rows=3_000, seed=5)
    shared = set(bank.join_ids) & set(partner.join_ids)
    alignment = align(bank.join_ids, partner.join_ids, codec)
    assert set(alignment.bank) == set(alignment.partner) == shared and len(shared) == 2_250
    assert {alignment.bank[i] for i in shared} == {alignment.partner[i] for i in shared}
    assert all(alignment.bank[i] == alignment.partner[i] for i in shared)
    assert alignment.bytes_to_partner > 32 * 3_000 and alignment.bytes_to_bank > 32 * 2_700


@pytest.mark.parametrize("seed", [0, 1])
def test_federated_lr_on_raw_shaped_data_lands_on_central_and_above_the_bank_alone(codec: AvroCodec, seed: int) -> None:
    bank, partner = raw_shaped(bank_rows=8_000, seed=seed)
    result = evaluate(bank, partner, EvaluationSettings(encrypted=False, seed=seed), codec)
    assert result.rows["aligned"] == len(set(bank.join_ids) & set(partner.join_ids)) == 6_000
    assert result.training["converged"], result.training
    assert abs(result.federated.auc - result.central.auc) <= AUC_TOLERANCE, (result.federated, result.central)
    assert result.federated.auc >= result.bank_only.auc + PARTNER_LIFT, (result.federated, result.bank_only)
    assert result.central.auc > 0.8
    assert result.preparation["bank"]["logged"] > 0 and result.preparation["partner"]["missing_indicators"] > 0
    assert result.preparation["bank"]["dropped"] == result.preparation["partner"]["dropped"] == 1  # constant columns


def shared_rows(bank: GuestTable, partner: HostTable) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The shared people in the bank's order, with each side's raw rows (PSI's job, done by id here)."""
    partner_row = {own_id: row for row, own_id in enumerate(partner.join_ids)}
    bank_rows = [row for row, own_id in enumerate(bank.join_ids) if own_id in partner_row]
    ids = [bank.join_ids[row] for row in bank_rows]
    return ids, bank.labels[bank_rows], bank.features[bank_rows], partner.features[[partner_row[i] for i in ids]]


def test_without_preparation_the_old_defaults_diverge_on_raw_data(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = shared_rows(*raw_shaped(bank_rows=3_000, seed=3))
    train, test = stratified_split(tuple(ids), labels, 0.3, seed=0)
    row = {join_id: at for at, join_id in enumerate(ids)}
    test_labels = labels[[row[j] for j in test]]
    # What training did before: the rows as they came (gaps as 0), a constant step of 0.15, three epochs of 256.
    filled_bank, filled_partner = np.nan_to_num(x_bank), np.nan_to_num(x_partner)
    old_bank = BankParty(ids, labels, filled_bank, preparation=Preparation.identity(x_bank.shape[1]), encrypted=False,
                         learning_rate=0.15, learning_rate_decay=0.0, shuffle_seed=1)
    old_partner = PartnerParty(ids, filled_partner, preparation=Preparation.identity(x_partner.shape[1]))
    old = train_federated(old_bank, old_partner, "minibatch", 3, 256, codec=codec, join_ids=train, stopping=None)
    old_auc = roc_auc_score(test_labels, predict(old_bank, old_partner, test))

    train_rows = [row[j] for j in train]
    bank = BankParty(ids, labels, x_bank, preparation=Preparation.fit(x_bank[train_rows]), encrypted=False, shuffle_seed=1)
    partner = PartnerParty(ids, x_partner, preparation=Preparation.fit(x_partner[train_rows]))
    new = train_federated(bank, partner, codec=codec, join_ids=train)
    new_auc = roc_auc_score(test_labels, predict(bank, partner, test))
    assert max(old.losses) > 5 > 0.6 > new.losses[-1], (old.losses, new.losses)
    assert new_auc > old_auc + 0.1, (new_auc, old_auc)


@pytest.mark.slow  # every step under real 2048-bit Paillier
def test_real_paillier_on_a_small_raw_shaped_set_is_the_plaintext_protocol_exactly(
        bank_private_key: PaillierPrivateKey, codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = shared_rows(*raw_shaped(bank_rows=600, seed=7))
    train, test = stratified_split(tuple(ids), labels, 0.3, seed=0)
    train_rows = [ids.index(j) for j in train]
    test_labels = labels[[ids.index(j) for j in test]]
    bank_preparation, partner_preparation = Preparation.fit(x_bank[train_rows]), Preparation.fit(x_partner[train_rows])
    outcomes = []
    for private_key in (bank_private_key, None):
        bank = BankParty(ids, labels, x_bank, preparation=bank_preparation, private_key=private_key,
                         encrypted=private_key is not None, shuffle_seed=2, workers=2)
        partner = PartnerParty(ids, x_partner, preparation=partner_preparation, workers=2)
        try:
            report = train_federated(bank, partner, codec=codec, join_ids=train)
            outcomes.append((report, bank.weights.copy(), partner.weights.copy(), predict(bank, partner, test)))
        finally:
            bank.close()
            partner.close()
    (encrypted, bank_weights, partner_weights, scores), (plain, plain_bank, plain_partner, _) = outcomes
    assert encrypted.converged and encrypted.losses == plain.losses
    assert np.array_equal(bank_weights, plain_bank) and np.array_equal(partner_weights, plain_partner)
    joined = np.hstack([bank_preparation.transform(x_bank), partner_preparation.transform(x_partner)])
    central = LogisticRegression(max_iter=5000).fit(joined[train_rows], labels[train_rows])
    central_auc = roc_auc_score(test_labels, central.predict_proba(joined[[ids.index(j) for j in test]])[:, 1])
    assert abs(roc_auc_score(test_labels, scores) - central_auc) <= AUC_TOLERANCE
