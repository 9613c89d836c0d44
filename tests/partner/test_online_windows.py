"""The partner's side of online federated windows, driven message by message as the bank's learner
sends them (real Redis, the Avro codec, Paillier 2048): a window moves w_p by the gradient of its
residuals, once; a replayed window is recognised and not applied again; steps that answer nothing
in flight (a partner that restarted, an abandoned attempt) are refused and apply nothing."""
from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.errors import MessageError
from services.core.kafka import Inbound, Outbound
from services.crypto.psi.link import AlignmentLink
from services.models.fedlr import BankCipher
from services.models.preparation import Preparation
from services.partner.app import PartnerService
from services.partner.features import FEATURE_NAMES
from services.partner.store import PartnerModel, PartnerStore
from services.protocol.exchange import envelope, open_payload
from services.protocol.exchange_messages import (
    BatchPlan,
    BatchScores,
    ExchangePayload,
    MaskedGradient,
    OnlineSession,
    WindowApplied,
)
from services.protocol.stream_messages import ExchangeMessage

MODEL = "fedlr.travel_insurance"
LINEAGE = f"{MODEL}@run1"
ROWS = 64
LEARNING_RATE = 0.5


class Bank:
    """The bank's side as the learner sends it: envelopes of one session."""

    def __init__(self, codec: AvroCodec, cipher: BankCipher, session: str) -> None:
        self.codec, self.cipher, self.session = codec, cipher, session

    def message(self, payload: ExchangePayload, answering: str = "") -> ExchangeMessage:
        outbound = envelope(self.codec, payload, "bank", self.session, answering)
        return outbound.message  # type: ignore[return-value]

    def open(self) -> ExchangeMessage:
        return self.message(OnlineSession(MODEL, LINEAGE, self.cipher.start(LEARNING_RATE, 0.0)))


async def step(partner: PartnerService, message: ExchangeMessage) -> list[Outbound] | MessageError:
    [result] = await partner.exchange([Inbound(message, message.session_id.encode(), "exchange.to_partner", 0, 0, 0, None)])
    return result


def payload(codec: AvroCodec, outbound: Outbound, message_type: type) -> object:
    return open_payload(codec, outbound.message, message_type)


@pytest.fixture
def people() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(4)
    join_ids = [f"{index:032x}" for index in range(40)]
    return join_ids, rng.normal(50.0, 20.0, size=(len(join_ids), len(FEATURE_NAMES)))


async def test_a_window_moves_the_partner_half_once_and_a_replay_is_not_applied_twice(
    settings: Settings, codec: AvroCodec, people: tuple[list[str], np.ndarray],
) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    prefix = settings.redis_key_prefix + "p:"
    store = PartnerStore(redis, prefix)
    join_ids, features = people
    await store.put_people([(f"P{i}", f"h{i}", row.tolist()) for i, row in enumerate(features)])
    await store.link_join_ids({f"h{i}": join_id for i, join_id in enumerate(join_ids)})
    mean, scale = features.mean(axis=0), features.std(axis=0)
    start = PartnerModel(MODEL, LINEAGE, np.linspace(-0.3, 0.3, len(FEATURE_NAMES)), Preparation.standardisation(mean, scale))
    await store.put_model(start)
    partner = PartnerService(store, AlignmentLink(redis, prefix, "partner", codec), codec)
    cipher = BankCipher(workers=1)
    bank = Bank(codec, cipher, "ab" * 16)

    rng = np.random.default_rng(5)
    window = [join_ids[int(i)] for i in rng.integers(0, len(join_ids), size=ROWS)]  # one customer may respond twice
    residuals = rng.uniform(-0.9, 0.9, size=ROWS)
    assert await step(partner, bank.open()) == []
    plan = bank.message(BatchPlan(0, 1, tuple(window)))
    [scores_out] = await step(partner, plan)  # type: ignore[misc]
    scores = payload(codec, scores_out, BatchScores)
    assert scores.join_ids == tuple(window)  # type: ignore[attr-defined]
    # Residuals that answer no scores in flight (an abandoned attempt's) are refused.
    assert (await step(partner, bank.message(cipher.encrypt_residuals(0, 1, residuals), "not-the-scores"))).reason \
        == "stale_training_step"  # type: ignore[union-attr]
    [masked_out] = await step(partner, bank.message(cipher.encrypt_residuals(0, 1, residuals),
                                                    scores_out.message.message_id))  # type: ignore[misc]
    unmasked = bank.message(cipher.unmask(payload(codec, masked_out, MaskedGradient)),  # type: ignore[arg-type]
                            masked_out.message.message_id)
    [applied_out, *pushed] = await step(partner, unmasked)  # type: ignore[misc]
    applied = payload(codec, applied_out, WindowApplied)
    assert (applied.window, applied.partner_version) == (1, f"{LINEAGE}#w1")  # type: ignore[attr-defined]
    assert applied_out.message.correlation_id == unmasked.message_id and pushed == []  # no PSI session: no pushes

    moved = await store.model(MODEL)
    assert moved is not None and (moved.window, moved.version) == (1, f"{LINEAGE}#w1")
    # The window's gradient, in clear: mean_i r_i x_i over the standardised rows (12-bit quantisation aside).
    rows = np.vstack([features[join_ids.index(j)] for j in window])
    expected = start.weights - LEARNING_RATE * (residuals @ ((rows - mean) / scale)) / ROWS
    assert np.allclose(moved.weights, expected, atol=2e-3) and not np.allclose(moved.weights, start.weights, atol=0.01)

    # Replays: the same gradient again (a crash before its transaction committed) and the window's
    # plan again (a bank that lost track) are answered as applied and change nothing.
    [again, *_] = await step(partner, unmasked)  # type: ignore[misc]
    [at_once] = await step(partner, bank.message(BatchPlan(0, 1, tuple(window))))  # type: ignore[misc]
    for answer in (again, at_once):
        assert payload(codec, answer, WindowApplied) == applied
    assert (await store.model(MODEL)).weights.tolist() == moved.weights.tolist()  # type: ignore[union-attr]
    assert (await step(partner, bank.message(BatchPlan(0, 3, tuple(window))))).reason == "window_out_of_order"  # type: ignore[union-attr]

    # A partner replica that restarted mid-window holds no masks: the gradient it gets is refused and
    # applies nothing; the bank's next attempt (a new session) applies the window once.
    [scores_out] = await step(partner, plan := bank.message(BatchPlan(0, 2, tuple(window))))  # type: ignore[misc]
    [masked_out] = await step(partner, bank.message(cipher.encrypt_residuals(0, 2, residuals),
                                                    scores_out.message.message_id))  # type: ignore[misc]
    restarted = PartnerService(store, AlignmentLink(redis, prefix, "partner", codec), codec)
    late = bank.message(cipher.unmask(payload(codec, masked_out, MaskedGradient)), masked_out.message.message_id)  # type: ignore[arg-type]
    assert (await step(restarted, late)).reason == "unknown_training_run"  # type: ignore[union-attr]
    assert (await store.model(MODEL)).window == 1  # type: ignore[union-attr]
    retry = Bank(codec, cipher, "cd" * 16)
    assert await step(restarted, retry.open()) == []
    [scores_out] = await step(restarted, retry.message(BatchPlan(0, 2, tuple(window))))  # type: ignore[misc]
    [masked_out] = await step(restarted, retry.message(cipher.encrypt_residuals(0, 2, residuals),
                                                       scores_out.message.message_id))  # type: ignore[misc]
    [applied_out, *_] = await step(restarted, retry.message(cipher.unmask(payload(codec, masked_out, MaskedGradient)),  # type: ignore[arg-type]
                                                            masked_out.message.message_id))  # type: ignore[misc]
    assert payload(codec, applied_out, WindowApplied).window == 2  # type: ignore[attr-defined]
    assert (await store.model(MODEL)).window == 2  # type: ignore[union-attr]
    # A second writer of the same window (a replica that lost its lease) is refused by the store.
    assert not await store.put_next_window(PartnerModel(MODEL, f"{LINEAGE}#w2", start.weights, start.preparation, 2))
    cipher.close()
    await redis.aclose()
