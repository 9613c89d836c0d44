"""The table of exchange message kinds: every cross-party message class in it once, every kind
with a sender, a receiver and what the receiver learns."""
from __future__ import annotations

from services.protocol.exchange_messages import EXCHANGE_MESSAGE_TYPES, TrainingStart
from services.protocol.kinds import KINDS, PROTOCOLS, kind_named, kind_of


def test_every_message_class_is_carried_by_exactly_one_kind() -> None:
    carried = [kind.message for kind in KINDS]
    assert len(carried) == len(set(carried))
    # TrainingStart crosses inside TrainingRun (fedlr_start); every other class is a kind of its own.
    assert set(carried) == set(EXCHANGE_MESSAGE_TYPES) - {TrainingStart}
    assert all(kind_of(kind.message) is kind and kind_named(kind.name) is kind for kind in KINDS)


def test_every_kind_says_who_sends_it_and_what_its_receiver_learns() -> None:
    assert len({kind.name for kind in KINDS}) == len(KINDS)
    for kind in KINDS:
        assert kind.protocol in PROTOCOLS and kind.name.startswith(("psi_", "score_", "partial_", "fedlr_"))
        assert kind.sender in ("bank", "partner", "either") and kind.receiver != kind.sender or kind.sender == "either"
        assert kind.carries and kind.receiver_learns
        assert kind.malformed_reason in ("bad_psi_message", "bad_score_request", "bad_partial_scores",
                                         "bad_fedlr_message")
    # The partner never sends a fedlr step the bank drives, and only the bank opens a PSI session.
    assert {kind.name for kind in KINDS if kind.sender == "partner"} == {"partial_scores", "fedlr_scores",
                                                                          "fedlr_masked"}
    assert kind_named("psi_session").may_send("bank") and not kind_named("psi_session").may_send("partner")
