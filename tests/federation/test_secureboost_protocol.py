"""SecureBoost's guarantees: real Paillier grows exactly the plaintext protocol's trees; nothing raw,
no label, no gradient and no threshold crosses; the parameters hold; bad input is refused clearly."""
from __future__ import annotations

import dataclasses
import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from services.core.avro import AvroCodec
from services.core.errors import ConfigError, ValidationError
from services.crypto.paillier import PaillierPrivateKey
from services.models.secureboost import BankParty, BoostingParameters, PartnerParty, predict, train_secureboost
from services.models.wire import Transcript
from services.protocol.exchange import decode_any
from services.protocol.exchange_messages import (
    ExchangePayload,
    SbtFinish,
    SbtGradients,
    SbtHistograms,
    SbtNodeRequest,
    SbtSplitRows,
    SbtSplits,
    SbtStart,
)

ROWS = 300
PARAMETERS = BoostingParameters(trees=2, depth=3, learning_rate=0.3, bins=16, min_child_weight=1.0)


def synthetic(rows: int = ROWS, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Skewed, unscaled columns with missing values on both sides; the label needs both parties."""
    rng = np.random.default_rng(seed)
    ids = [f"join-{seed}-{i}" for i in range(rows)]
    x_bank = np.column_stack([rng.lognormal(8, 1.5, rows), rng.integers(0, 4, rows).astype(float), rng.normal(size=rows)])
    x_partner = np.column_stack([rng.exponential(3000, rows), rng.normal(size=rows), (rng.random(rows) < 0.2) * 1.0,
                                 rng.normal(50, 10, rows)])
    logits = np.log(x_bank[:, 0]) - 8 + x_partner[:, 1] - 2 * x_partner[:, 2] + 0.5 * rng.normal(size=rows)
    x_bank[rng.random(x_bank.shape) < 0.1] = np.nan
    x_partner[rng.random(x_partner.shape) < 0.15] = np.nan
    return ids, (logits > 0).astype(int), x_bank, x_partner


@dataclass
class Run:
    bank: BankParty
    partner: PartnerParty
    transcript: Transcript
    probabilities: np.ndarray


def run(private_key: PaillierPrivateKey | None, codec: AvroCodec, partner_workers: int = 1) -> Run:
    ids, labels, x_bank, x_partner = synthetic()
    bank = BankParty(ids, labels, x_bank, PARAMETERS, private_key=private_key, encrypted=private_key is not None,
                     workers=1)
    partner = PartnerParty(ids, x_partner, workers=partner_workers, shuffle=random.Random(5))
    transcript: Transcript = []
    try:
        train_secureboost(bank, partner, codec=codec, transcript=transcript)
        return Run(bank, partner, transcript, predict(bank, partner, ids))
    finally:
        bank.close()
        partner.close()


@pytest.fixture(scope="module")
def encrypted_run(bank_private_key: PaillierPrivateKey, codec: AvroCodec) -> Run:
    return run(bank_private_key, codec, partner_workers=2)  # the partner's histograms over its process pool


@pytest.fixture(scope="module")
def plaintext_run(codec: AvroCodec) -> Run:
    return run(None, codec)


def test_encrypted_training_grows_exactly_the_plaintext_protocol_trees(encrypted_run: Run, plaintext_run: Run) -> None:
    assert encrypted_run.bank.model.to_bytes() == plaintext_run.bank.model.to_bytes()
    assert encrypted_run.partner.split_table == plaintext_run.partner.split_table
    assert np.array_equal(encrypted_run.probabilities, plaintext_run.probabilities)
    owners = {node.owner for tree in encrypted_run.bank.model.trees for node in tree}
    assert owners == {"bank", "partner", "leaf"}  # both parties' columns split somewhere
    assert encrypted_run.bank.tree_losses[-1] < encrypted_run.bank.tree_losses[0]


def decoded(transcript: Transcript, direction: str, codec: AvroCodec) -> list[tuple[bytes, ExchangePayload]]:
    return [(payload, decode_any(codec, payload)) for way, payload in transcript if way == direction]


def scalar_fields(message: ExchangePayload) -> list[object]:
    """Every number and string any field of the message holds (tuples opened)."""
    values: list[object] = []
    for field in dataclasses.fields(message):  # type: ignore[arg-type]
        value = getattr(message, field.name)
        values.extend(value if isinstance(value, tuple) else [value])
    return values


def floats_in(payloads: list[bytes], values: np.ndarray) -> list[float]:
    """Values whose float64 bytes (either endianness) appear in any payload (zero is in every header)."""
    finite = [float(v) for v in np.unique(values[np.isfinite(values)]) if v != 0.0]
    return [v for v in finite if any(struct.pack(">d", v) in p or struct.pack("<d", v) in p for p in payloads)]


def test_the_partner_receives_no_label_no_bank_value_and_no_gradient_in_clear(encrypted_run: Run, codec: AvroCodec) -> None:
    bank = encrypted_run.bank
    received = decoded(encrypted_run.transcript, "to_partner", codec)
    assert {type(m) for _, m in received} == {SbtStart, SbtGradients, SbtNodeRequest, SbtSplits, SbtFinish}
    payloads = [p for p, _ in received]
    assert floats_in(payloads, bank.features) == []
    bank_thresholds = np.array([n.threshold for tree in bank.model.trees for n in tree if n.owner == "bank"])
    assert floats_in(payloads, bank_thresholds) == []
    for _, message in received:  # every decoded field: no float at all, no label vector
        fields = scalar_fields(message)
        assert not [v for v in fields if isinstance(v, float)]
        assert not any(isinstance(getattr(message, f.name), tuple) and len(getattr(message, f.name)) == ROWS
                       and set(getattr(message, f.name)) <= {0, 1} for f in dataclasses.fields(message))  # type: ignore[arg-type]
    labels = bank.labels.astype(np.uint8)
    assert not any(np.packbits(labels).tobytes() in p or labels.tobytes() in p for p in payloads)
    # The gradients are ciphertexts: they decrypt to the packed (g, h), which appear nowhere in clear.
    key = bank.private_key
    assert key is not None
    width = (key.public_key.n.bit_length() + 7) // 8
    for _, message in received:
        if isinstance(message, SbtGradients):
            assert message.encrypted and len(set(message.values)) == len(message.values) == ROWS
            plaintexts = [key.decrypt_raw(c) for c in message.values[:50]]
            assert not any(pt.to_bytes(width, "big") in p for pt in plaintexts for p in payloads)
            low = np.array([pt & ((1 << message.slot_bits) - 1) for pt in plaintexts], dtype=np.float64)
            low[low >= 1 << (message.slot_bits - 1)] -= 1 << message.slot_bits
            assert np.array_equal(low < 0, bank.labels[:50] == 1)  # under the key, g's sign is the label


def test_the_leak_check_finds_the_gradients_when_nothing_is_encrypted(plaintext_run: Run, codec: AvroCodec) -> None:
    message = next(m for _, m in decoded(plaintext_run.transcript, "to_partner", codec) if isinstance(m, SbtGradients))
    assert not message.encrypted
    g, _ = plaintext_run.bank.loss.gradients(plaintext_run.bank.labels, np.full(ROWS, plaintext_run.bank.model.initial_score))
    low = np.array([v & ((1 << message.slot_bits) - 1) for v in message.values], dtype=np.float64)
    low[low >= 1 << (message.slot_bits - 1)] -= 1 << message.slot_bits
    assert np.array_equal(low < 0, g < 0)  # in clear, every sign, hence every label, is readable


def test_the_bank_receives_no_partner_value_or_threshold_and_only_ciphertexts_of_sums(encrypted_run: Run,
                                                                                     codec: AvroCodec) -> None:
    partner, bank = encrypted_run.partner, encrypted_run.bank
    received = decoded(encrypted_run.transcript, "to_bank", codec)
    assert {type(m) for _, m in received} == {SbtHistograms, SbtSplitRows}
    payloads = [p for p, _ in received]
    assert floats_in(payloads, partner.features) == []
    assert floats_in(payloads, np.array([rule.threshold for rule in partner.split_table.rules])) == []
    for _, message in received:
        assert not [v for v in scalar_fields(message) if isinstance(v, float)]
        if isinstance(message, SbtHistograms):
            assert message.encrypted and message.per_value > 1
            values = [int.from_bytes(message.packed_values[i:i + message.width], "big")
                      for i in range(0, len(message.packed_values), message.width)]
            assert bank.private_key is not None
            assert all(0 < v < bank.public_key.nsquare and v > bank.public_key.n for v in values)


def test_trees_honour_depth_trees_and_min_child_weight(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic(400, seed=1)
    parameters = BoostingParameters(trees=4, depth=2, min_child_weight=5.0, learning_rate=0.5)
    bank = BankParty(ids, labels, x_bank, parameters, encrypted=False)
    partner = PartnerParty(ids, x_partner, shuffle=random.Random(0))
    report = train_secureboost(bank, partner, codec=codec)
    assert len(bank.model.trees) == len(report.losses) == 4
    assert report.losses == sorted(report.losses, reverse=True)
    for tree in bank.model.trees:
        assert max(node.node_id for node in tree) <= 2 ** (parameters.depth + 1) - 2  # depth 2: ids 0..6
        assert sum(node.owner == "leaf" for node in tree) <= 2 ** parameters.depth
    # In the first tree every row has the same hessian p0 (1 - p0): each leaf must hold min_child_weight of it.
    p0 = labels.mean()
    leaves = bank.model.leaf_ids(x_bank, partner.split_table.decisions(x_partner))[:, 0]
    counts = np.unique(leaves, return_counts=True)[1]
    assert counts.size >= 3 and (counts * p0 * (1 - p0) >= parameters.min_child_weight).all()
    with pytest.raises(ValidationError):
        bank.model.raw_scores(x_bank[:, :2], partner.split_table.decisions(x_partner))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 2] * 100), "labels must be one 0 or 1 per join id (row 2: 2.0)"),
    (np.array([0.0, 1.0, np.nan] * 100), "labels must be one 0 or 1 per join id (row 2: nan)"),
    (np.array([0, 1] * 10), "labels must be one 0 or 1 per join id"),
])
def test_labels_that_are_not_0_or_1_per_row_are_refused(labels: np.ndarray, message: str) -> None:
    ids, _, x_bank, _ = synthetic()
    with pytest.raises(ValidationError) as raised:
        BankParty(ids, labels, x_bank, encrypted=False)
    assert str(raised.value) == message


def test_mismatched_ids_infinite_values_and_bad_parameters_are_refused(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic()
    partner = PartnerParty(ids[:-1], x_partner[:-1])
    bank = BankParty(ids, labels, x_bank, PARAMETERS, encrypted=False)
    with pytest.raises(ValidationError, match=f"the partner holds no row for join id '{ids[-1]}'") as raised:
        train_secureboost(bank, partner, codec=codec)
    assert raised.value.reason == "unknown_join_id"
    with pytest.raises(ValidationError, match="the bank holds no row for join id 'stranger'"):
        bank.start("sbt", "v1", [*ids[:10], "stranger"])
    with pytest.raises(ValidationError, match="join ids must be unique"):
        PartnerParty([ids[0], ids[0]], x_partner[:2])
    bad = x_partner.copy()
    bad[7, 2] = np.inf
    with pytest.raises(ValidationError, match="the partner's feature 2 is infinite in row 7"):
        PartnerParty(ids, bad)
    with pytest.raises(ValidationError, match="300 rows"):
        BankParty(ids, labels, x_bank[:10], encrypted=False)
    with pytest.raises(ConfigError, match="loss must be one of log_loss, exponential"):
        BoostingParameters(loss="hinge")
    with pytest.raises(ConfigError, match=r"depth 1\.\.12"):
        BoostingParameters(depth=0)
    with pytest.raises(ConfigError, match="bins must be 2 to 254"):
        BankParty(ids, labels, x_bank, BoostingParameters(bins=1), encrypted=False).start("sbt", "v1")


def test_messages_out_of_step_are_refused(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic()
    bank = BankParty(ids, labels, x_bank, PARAMETERS, encrypted=False)
    partner = PartnerParty(ids, x_partner, shuffle=random.Random(0))
    with pytest.raises(ValidationError, match="has not started"):
        partner.on_gradients(SbtGradients.of(0, 0, False, 40, 256, []))
    partner.on_start(bank.start("sbt", "v1"))
    partner.on_gradients(bank.gradients(0))
    request = bank.node_request()
    assert request is not None
    histograms = partner.histograms(request)
    with pytest.raises(ValidationError, match="parent 9 has no histogram"):
        partner.histograms(SbtNodeRequest.of(0, 1, {1: [0, 1]}, [(2, 9, 1)]))
    with pytest.raises(ValidationError, match="do not answer this level"):
        bank.choose_splits(dataclasses.replace(histograms, depth=3))
    with pytest.raises(ValidationError, match="has no candidate 99999"):
        partner.split_rows(SbtSplits(0, 0, (0,), (99_999,)))
    with pytest.raises(ValidationError, match="ascending"):
        partner.histograms(SbtNodeRequest.of(0, 0, {0: [5, 3]}, []))
    splits = bank.choose_splits(histograms)
    with pytest.raises(ValidationError, match="do not answer this level's partner splits"):
        bank.apply_splits(SbtSplitRows(0, 0, (), (), (), b"") if splits.node_ids else SbtSplitRows(0, 0, (0,), (0,), (1,), b"\x80"))


def test_gradients_in_chunks_give_the_partner_the_same_histograms(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic()
    bank = BankParty(ids, labels, x_bank, PARAMETERS, encrypted=False)
    whole, chunked = (PartnerParty(ids, x_partner, shuffle=random.Random(0)) for _ in range(2))
    start = bank.start("sbt", "v1")
    whole.on_start(start)
    chunked.on_start(start)
    gradients = bank.gradients(0)
    whole.on_gradients(gradients)
    chunks = gradients.chunks(70)
    assert [chunk.offset for chunk in chunks] == [0, 70, 140, 210, 280]
    for chunk in chunks[:-1]:
        chunked.on_gradients(chunk)
    with pytest.raises(ValidationError, match="no gradients received"):
        chunked.histograms(bank.node_request())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="out of order"):
        chunked.on_gradients(chunks[2])
    chunked.on_gradients(chunks[-1])
    request = bank.node_request()
    assert request is not None
    assert chunked.histograms(request) == whole.histograms(request)


def test_a_start_in_chunks_starts_the_partner_as_a_whole_one(codec: AvroCodec) -> None:
    ids, labels, x_bank, x_partner = synthetic()
    bank = BankParty(ids, labels, x_bank, PARAMETERS, encrypted=False)
    start = bank.start("sbt", "v1")
    whole, chunked = (PartnerParty(ids, x_partner, shuffle=random.Random(0)) for _ in range(2))
    whole.on_start(start)
    chunks = start.chunks(128)
    assert [len(c.join_ids) for c in chunks] == [128, 128, 44] and all(c.total_rows == ROWS for c in chunks)
    for chunk in chunks:
        chunked.on_start(codec.decode(codec.encode(chunk), SbtStart))
    assert chunked.training.start == whole.training.start and np.array_equal(chunked.training.binned, whole.training.binned)
    with pytest.raises(ValidationError, match="out of order"):
        chunks[0].joined([chunks[2]])
