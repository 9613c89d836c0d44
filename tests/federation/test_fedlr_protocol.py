"""The protocol's guarantees: what crosses, the minimum batch, calibrated noise, encrypted = plaintext math."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from services.core.avro import AvroCodec
from services.core.errors import ValidationError
from services.crypto.paillier import PaillierPrivateKey, encode_fixed
from services.models.fedlr import (
    BankParty,
    BatchTooSmallError,
    GaussianNoise,
    PartnerParty,
    Transcript,
    plaintext_weighted_sums,
    predict,
    train_federated,
)
from services.protocol.exchange import decode_any
from services.protocol.exchange_messages import (
    BatchPlan,
    BatchScores,
    EncryptedResiduals,
    MaskedGradient,
    TrainingStart,
    UnmaskedGradient,
)


def synthetic(rows: int, bank_features: int, partner_features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"join-{seed}-{i}" for i in range(rows)]
    x_bank = rng.normal(size=(rows, bank_features))
    x_partner = rng.normal(size=(rows, partner_features))
    logits = x_bank[:, 0] - x_partner[:, 0] + 0.5 * x_partner[:, -1] + 0.5 * rng.normal(size=rows)
    return ids, (logits > 0).astype(int), x_bank, x_partner


def parties(private_key: PaillierPrivateKey | None, rows: int = 300, seed: int = 0, **bank_options):
    ids, labels, x_bank, x_partner = synthetic(rows, 3, 4, seed)
    bank = BankParty(ids, labels, x_bank, private_key=private_key, encrypted=private_key is not None,
                     min_batch_size=bank_options.pop("min_batch_size", 50), shuffle_seed=7, workers=1, **bank_options)
    partner = PartnerParty(ids, x_partner, workers=1)
    return bank, partner, labels, x_bank, x_partner


def test_encrypted_training_gives_exactly_the_plaintext_protocol_math(bank_private_key: PaillierPrivateKey,
                                                                       codec: AvroCodec) -> None:
    encrypted_bank, encrypted_partner, *_ = parties(bank_private_key)
    plain_bank, plain_partner, *_ = parties(None)
    for mode in ("minibatch", "online", "batch"):
        train_federated(encrypted_bank, encrypted_partner, mode, epochs=1, batch_size=100, codec=codec)
        train_federated(plain_bank, plain_partner, mode, epochs=1, batch_size=100, codec=codec)
        assert np.array_equal(encrypted_partner.weights, plain_partner.weights)
        assert np.array_equal(encrypted_bank.weights, plain_bank.weights)
    assert np.abs(encrypted_partner.weights).min() > 0


def partner_bound(transcript: Transcript) -> list[bytes]:
    return [payload for direction, payload in transcript if direction == "to_partner"]


def bank_bound(transcript: Transcript) -> list[bytes]:
    return [payload for direction, payload in transcript if direction == "to_bank"]


def residual_encodings_seen_in(payloads: list[bytes], residuals: np.ndarray, bank: BankParty) -> int:
    width = (bank.public_key.n.bit_length() + 7) // 8
    needles = [encode_fixed(float(r), bank.residual_exponent, bank.public_key).to_bytes(width, "big") for r in residuals]
    return sum(any(needle in payload for payload in payloads) for needle in needles)


def test_partner_never_receives_labels_or_bank_features(bank_private_key: PaillierPrivateKey, codec: AvroCodec) -> None:
    bank, partner, labels, x_bank, _ = parties(bank_private_key)
    transcript: Transcript = []
    train_federated(bank, partner, "minibatch", epochs=1, batch_size=100, codec=codec, transcript=transcript)
    received = partner_bound(transcript)

    messages = [decode_any(codec, payload) for payload in received]
    kinds = {type(message) for message in messages}
    assert kinds == {TrainingStart, BatchPlan, EncryptedResiduals, UnmaskedGradient}
    fields = {f.name for kind in kinds for f in dataclasses.fields(kind)}
    assert fields == {"epoch", "batch_index", "public_key_n", "learning_rate", "l2", "encrypted", "learning_rate_decay",
                      "join_ids", "width", "packed_values", "exponent"}
    for value in x_bank.ravel().tolist() + bank.features.ravel().tolist():  # raw and as prepared
        assert not any(struct.pack(">d", value) in p or struct.pack("<d", value) in p for p in received)

    # The residuals (whose signs are the labels) are inside the ciphertexts, and only the key opens them.
    residual_messages = [m for m in messages if isinstance(m, EncryptedResiduals)]
    for message in residual_messages:
        assert message.encrypted
        plan = next(m for m in messages if isinstance(m, BatchPlan)
                    and (m.epoch, m.batch_index) == (message.epoch, message.batch_index))
        residuals = np.array([bank.private_key.decrypt_fixed(c, message.exponent) for c in message.values])
        rows = [int(join_id.rsplit("-", 1)[1]) for join_id in plan.join_ids]
        assert np.array_equal(residuals < 0, labels[rows] == 1)
        assert residual_encodings_seen_in(received, residuals, bank) == 0
        assert len(set(message.values)) == len(message.values)


def test_the_leak_check_finds_residuals_when_nothing_is_encrypted(codec: AvroCodec) -> None:
    bank, partner, *_ = parties(None)
    transcript: Transcript = []
    train_federated(bank, partner, "minibatch", epochs=1, batch_size=100, codec=codec, transcript=transcript)
    received = partner_bound(transcript)
    message = next(m for m in (decode_any(codec, p) for p in received) if isinstance(m, EncryptedResiduals))
    residuals = np.array([v if v < bank.public_key.n // 2 else v - bank.public_key.n for v in message.values]) / 16**8
    assert residual_encodings_seen_in(received, residuals, bank) == len(residuals)


def test_bank_never_receives_partner_features_and_cannot_read_the_gradient(bank_private_key, codec: AvroCodec) -> None:
    bank, partner, _, _, x_partner = parties(bank_private_key)
    transcript: Transcript = []
    train_federated(bank, partner, "minibatch", epochs=1, batch_size=100, codec=codec, transcript=transcript)
    received = bank_bound(transcript)
    assert {type(decode_any(codec, p)) for p in received} == {BatchScores, MaskedGradient}
    for value in x_partner.ravel().tolist() + partner.training_features.ravel().tolist():
        if value == 0.0:  # eight zero bytes are in every header
            continue
        assert not any(struct.pack(">d", value) in p or struct.pack("<d", value) in p for p in received)
    # What the bank decrypts is the masked value: nowhere near the gradient's integer sums (< 2^70).
    for payload in received:
        message = decode_any(codec, payload)
        if isinstance(message, MaskedGradient):
            plaintexts = [bank_private_key.decrypt_raw(c) for c in message.values]
            assert all(2**70 < p < bank_private_key.public_key.n - 2**70 for p in plaintexts)


def test_minimum_batch_size_is_enforced_with_a_clear_error(codec: AvroCodec) -> None:
    bank, partner, *_ = parties(None, min_batch_size=64)
    for mode in ("minibatch", "online"):
        with pytest.raises(BatchTooSmallError, match="batch size 10 is below the minimum of 64"):
            train_federated(bank, partner, mode, epochs=1, batch_size=10, codec=codec)
    with pytest.raises(BatchTooSmallError, match="cannot make one batch"):
        train_federated(bank, partner, "batch", epochs=1, batch_size=0, codec=codec, join_ids=bank.join_ids[:20])
    assert [len(plan.join_ids) for plan in bank.plan_epoch(0, 100, bank.join_ids[:290])] == [100, 100, 90]
    plans = bank.plan_epoch(0, 100, bank.join_ids[:250])  # a tail of 50 < 64 joins the batch before it
    assert [len(plan.join_ids) for plan in plans] == [100, 150]
    assert sorted(j for plan in plans for j in plan.join_ids) == sorted(bank.join_ids[:250])
    small = BatchPlan(0, 0, tuple(bank.join_ids[:10]))
    partner.on_training_start(bank.start())
    with pytest.raises(BatchTooSmallError):
        bank.residuals_step(small, partner.scores_step(small))


def one_step_gradient(noise: GaussianNoise | None, features: int, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    ids, labels, x_bank, x_partner = synthetic(rows, 2, features, seed=3)
    bank = BankParty(ids, labels, x_bank, encrypted=False, noise=noise, min_batch_size=rows, shuffle_seed=1,
                     noise_rng=np.random.default_rng(11))
    partner = PartnerParty(ids, x_partner, feature_bits=8, workers=1)
    partner.on_training_start(bank.start())
    plan = bank.plan_epoch(0, rows)[0]
    residuals = bank.residuals_step(plan, partner.scores_step(plan))
    gradient = partner.update_step(bank.decrypt_step(partner.gradient_step(residuals)))
    return gradient, partner._quantised.scales


def test_noise_changes_the_partner_gradient_within_its_calibrated_bounds() -> None:
    features, rows = 300, 400
    noise = GaussianNoise(epsilon=2.0, delta=1e-5)
    exact, scales = one_step_gradient(None, features, rows)
    noisy, _ = one_step_gradient(noise, features, rows)
    sigma = noise.sigma(feature_bits=8, features=features)
    standardised = (noisy - exact) * rows / scales / sigma  # back to units of sum_i r_i q_ij, over sigma
    assert np.abs(standardised).max() < 6
    assert 0.85 < standardised.std() < 1.15
    assert abs(standardised.mean()) < 0.2


def test_messages_out_of_order_are_refused(bank_private_key: PaillierPrivateKey) -> None:
    bank, partner, *_ = parties(None)
    with pytest.raises(ValidationError, match="training has not started"):
        _ = partner.public_key
    partner.on_training_start(bank.start())
    first, second = bank.plan_epoch(0, 100)[:2]
    scores = partner.scores_step(first)
    with pytest.raises(ValidationError, match="do not answer the current batch plan"):
        bank.residuals_step(second, scores)
    residuals = bank.residuals_step(first, scores)
    masked = partner.gradient_step(residuals)
    with pytest.raises(ValidationError, match="has not scored"):
        partner.gradient_step(residuals)
    unmasked = bank.decrypt_step(masked)
    with pytest.raises(ValidationError, match="has not sent residuals"):
        bank.decrypt_step(masked)
    partner.update_step(unmasked)
    with pytest.raises(ValidationError, match="did not send"):
        partner.update_step(unmasked)


def test_prediction_sends_only_partial_scores_and_matches_the_joint_model(codec: AvroCodec) -> None:
    bank, partner, labels, x_bank, x_partner = parties(None)
    train_federated(bank, partner, "batch", epochs=30, batch_size=0, codec=codec)
    prepared_bank, prepared_partner = bank.preparation.transform(x_bank), partner.preparation.transform(x_partner)
    joint = 1 / (1 + np.exp(-(prepared_bank @ bank.weights + bank.bias + prepared_partner @ partner.weights)))
    assert np.allclose(predict(bank, partner, bank.join_ids), joint)
    assert ((joint > 0.5) == labels).mean() > 0.8
    with pytest.raises(ValidationError, match="holds no row for join id 'nobody'"):
        predict(bank, partner, ["nobody"])


def test_two_worker_pools_train_the_same_model(bank_private_key: PaillierPrivateKey, codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic(300, 3, 9, seed=5)
    results = []
    for workers in (1, 2):
        bank = BankParty(ids, labels, x_bank, private_key=bank_private_key, min_batch_size=50, shuffle_seed=3,
                         workers=workers)
        partner = PartnerParty(ids, x_partner, workers=workers)
        try:
            train_federated(bank, partner, "minibatch", epochs=1, batch_size=150, codec=codec)
        finally:
            bank.close()
            partner.close()
        results.append(partner.weights.copy())
    assert np.array_equal(results[0], results[1])


def test_plaintext_sums_are_exact_for_large_batches() -> None:
    bank, *_ = parties(None)
    rng = np.random.default_rng(0)
    residuals = rng.uniform(-1, 1, size=5000)
    quantised = rng.integers(-32767, 32768, size=(5000, 3))
    encodings = [encode_fixed(float(r), -8, bank.public_key) for r in residuals]
    signed = [round(float(r) * 16**8) for r in residuals]
    want = [sum(s * int(q) for s, q in zip(signed, column)) % bank.public_key.n for column in quantised.T.tolist()]
    assert plaintext_weighted_sums(encodings, quantised, bank.public_key) == want
