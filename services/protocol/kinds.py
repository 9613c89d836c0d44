"""The one table of exchange message kinds: who sends each, who receives it, which message class
it carries and what the receiver learns from it. Semi-honest parties; the exchange topics are
readable by the two endpoints only.

Everything else reads this table: `check_incoming` refuses a kind not in it or from the wrong
side, the services dispatch on `Kind.protocol`, and the protocol tables in README.md are rendered
from it (`render_table`; tests/protocol/test_kinds.py fails while a committed table differs).
What the tables cannot say (what each side learns locally, the leaks beyond the messages, how
they are bounded) is in the protocol modules: services/crypto/psi/protocol.py and
services/models/fedlr.py and services/models/secureboost/__init__.py.

>>> kind_named("psi_blinded").message.__name__, kind_named("fedlr_masked").sender
('PsiBlindedIds', 'partner')
>>> kind_of(ScoreRequest).name, kind_of(ScoreRequest).receiver
('score_request', 'partner')
"""
from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.core.errors import ValidationError
from services.protocol.exchange_messages import (
    BatchPlan,
    BatchScores,
    EncryptedResiduals,
    ExchangePayload,
    MaskedGradient,
    PartialScores,
    Party,
    PsiBlindedIds,
    PsiDoublyBlindedIds,
    PsiSession,
    SbtDecisions,
    SbtFinish,
    SbtGradients,
    SbtHistograms,
    SbtNodeRequest,
    SbtSplitRows,
    SbtSplits,
    SbtStart,
    ScoreRequest,
    TrainingFinish,
    TrainingRun,
    UnmaskedGradient,
)

Protocol = Literal["psi", "scoring", "fedlr", "sbt"]
PROTOCOLS: tuple[Protocol, ...] = typing.get_args(Protocol)
Side = Literal["bank", "partner", "either"]


@dataclass(frozen=True)
class Kind:
    """One step of a protocol: `sender` "either" means both parties send it, each to the other."""

    name: str
    protocol: Protocol
    sender: Side
    message: type[ExchangePayload]
    carries: str
    receiver_learns: str

    @property
    def receiver(self) -> Side:
        if self.sender == "either":
            return "either"
        return "partner" if self.sender == "bank" else "bank"

    @property
    def direction(self) -> str:
        return "either way" if self.sender == "either" else f"{self.sender} -> {self.receiver}"

    @property
    def malformed_reason(self) -> str:
        """The dead-letter reason of a payload of this kind that does not decode."""
        return self.message.MALFORMED

    def may_send(self, party: Party) -> bool:
        return self.sender in (party, "either")


KINDS: tuple[Kind, ...] = (
    Kind("psi_session", "psi", "bank", PsiSession,
         "session id, salt, expiry",
         "nothing private"),
    Kind("psi_blinded", "psi", "either", PsiBlindedIds,
         "k_own . H(id) for the sender's new ids, in a uniformly random order",
         "how many ids the sender has (or added); nothing about any id (DDH: k . H(id) looks random without k)"),
    Kind("psi_doubly_blinded", "psi", "either", PsiDoublyBlindedIds,
         "the receiver's points times the sender's scalar, in the order received",
         "nothing by itself: random-looking points, which the receiver maps back to its own ids by position"),
    Kind("score_request", "scoring", "bank", ScoreRequest,
         "join ids of newly aligned customers",
         "which shared people the bank wants scores for (all of them: it asks for every new match)"),
    Kind("partial_scores", "scoring", "partner", PartialScores,
         "per join id and federated model: w_p . x_p, the partner's share of the log-odds, and the model version",
         "one number per person and model, never a feature; the bank shows it as one reason code, "
         "`partner_features`"),
    Kind("sbt_decisions", "scoring", "partner", SbtDecisions,
         "per join id and SecureBoost model: one bit per partner split of the model (left or right), and the version",
         "which way each partner split sends the person, never the feature or the threshold behind it"),
    Kind("fedlr_start", "fedlr", "bank", TrainingRun,
         "public key n, learning rate, l2 (`TrainingStart`); model name and version label; the training rows' "
         "join ids",
         "which shared people have a label for this product (not the labels); nothing else private"),
    Kind("fedlr_plan", "fedlr", "bank", BatchPlan,
         "the batch's join ids in order",
         "which rows are in the batch (it knows the intersection already)"),
    Kind("fedlr_scores", "fedlr", "partner", BatchScores,
         "w_p . x_p per row (step 1)",
         "the partner's share of each row's log-odds, as at scoring time; never a feature or a weight"),
    Kind("fedlr_residuals", "fedlr", "bank", EncryptedResiduals,
         "[[sigmoid(z_i) - y_i]] under the bank's key (step 2)",
         "nothing (Paillier is IND-CPA): not the labels, not the bank's scores"),
    Kind("fedlr_masked", "fedlr", "partner", MaskedGradient,
         "[[sum_i r_i q_ij + m_j]], m_j uniform mod n, re-encrypted (step 3)",
         "nothing: each value is uniformly random mod n to the bank"),
    Kind("fedlr_unmasked", "fedlr", "bank", UnmaskedGradient,
         "the decryption, plus optional Gaussian noise (step 4)",
         "its own gradient (1/B) sum_i r_i x_ij: an aggregate over at least `min_batch_size` rows"),
    Kind("fedlr_finish", "fedlr", "bank", TrainingFinish,
         "end of the run",
         "that w_p is now the partner half of the run's version label"),
    Kind("sbt_start", "sbt", "bank", SbtStart,
         "public key n, bins per column, model name and version label, the training rows' join ids",
         "which shared people have a label for this product (not the labels); nothing else private"),
    Kind("sbt_gradients", "sbt", "bank", SbtGradients,
         "per tree and training row [[g_i + h_i 2^s]] under the bank's key, and the slot width s",
         "nothing (Paillier is IND-CPA): not the gradients, hence not the labels; s tells the row count"),
    Kind("sbt_nodes", "sbt", "bank", SbtNodeRequest,
         "per tree level, the row positions of the nodes to sum (the smaller sibling) and which to derive",
         "the instance space of every node, as in FATE: which training rows fall together, so also how each "
         "bank split partitions them (not the bank feature or threshold behind it)"),
    Kind("sbt_histograms", "sbt", "partner", SbtHistograms,
         "per node, [[(G_L, H_L)]] of every partner candidate split, shuffled, several to a ciphertext",
         "after decryption, the gradient sums left of each candidate: aggregates over a node's rows, in an order "
         "that names neither the partner column nor the threshold"),
    Kind("sbt_splits", "sbt", "bank", SbtSplits,
         "per node whose best split is the partner's, the winning candidate's index",
         "that its candidate won at that node: its own column and threshold; nothing of the gains"),
    Kind("sbt_split_rows", "sbt", "partner", SbtSplitRows,
         "per such node, the partner's split id and a bitmap of the node's rows that go left",
         "how a partner split partitions the node's rows; never the column, threshold or any value"),
    Kind("sbt_finish", "sbt", "bank", SbtFinish,
         "end of the training, the number of trees",
         "that its split table is now the partner half of the version label"),
)
_BY_NAME: Mapping[str, Kind] = {kind.name: kind for kind in KINDS}
_BY_MESSAGE: Mapping[type[ExchangePayload], Kind] = {kind.message: kind for kind in KINDS}


def kind_named(name: str) -> Kind:
    """The kind of an incoming envelope; one not in the table is refused (a dead letter).

    >>> kind_named("fedlr_shout")
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: unknown exchange message kind 'fedlr_shout'
    """
    kind = _BY_NAME.get(name)
    if kind is None:
        raise ValidationError(f"unknown exchange message kind {name!r}", reason="unknown_kind")
    return kind


def kind_of(message_class: type[ExchangePayload]) -> Kind:
    """The kind that carries `message_class` (each class is carried by exactly one kind)."""
    kind = _BY_MESSAGE.get(message_class)
    if kind is None:
        raise ValueError(f"{message_class.__name__} is not carried by any exchange message kind")
    return kind


def render_table(protocol: Protocol) -> str:
    """The markdown table of one protocol's kinds, as README.md shows it.

    >>> print(render_table("scoring").splitlines()[2][:63])
    | `score_request` | `ScoreRequest` | bank -> partner | join ids
    """
    lines = ["| kind | message | from -> to | carries | what the receiver learns |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{kind.name}` | `{kind.message.__name__}` | {kind.direction} | {kind.carries} | {kind.receiver_learns} |"
              for kind in KINDS if kind.protocol == protocol]
    return "\n".join(lines)


GENERATED_BLOCK = re.compile(r"^(<!-- kinds:(\w+) -->\n)(.*?)^(<!-- /kinds -->)$", re.DOTALL | re.MULTILINE)


def render_tables_in(markdown: str) -> str:
    """`markdown` with every block between `<!-- kinds:<protocol> -->` and `<!-- /kinds -->`
    replaced by that protocol's table: the committed doc must equal its render.

    >>> rendered = render_tables_in("a\\n<!-- kinds:psi -->\\nold\\n<!-- /kinds -->\\nb")
    >>> lines = rendered.splitlines()
    >>> lines[2], lines[-2:], len(lines)
    ('| kind | message | from -> to | carries | what the receiver learns |', ['<!-- /kinds -->', 'b'], 9)
    >>> render_tables_in(rendered) == rendered == render_tables_in("a\\n<!-- kinds:psi -->\\n<!-- /kinds -->\\nb")
    True
    """
    def render(match: re.Match[str]) -> str:
        protocol = match.group(2)
        if protocol not in PROTOCOLS:
            raise ValueError(f"no protocol {protocol!r} in the kinds table")
        return match.group(1) + render_table(typing.cast(Protocol, protocol)) + "\n" + match.group(4)

    return GENERATED_BLOCK.sub(render, markdown)
