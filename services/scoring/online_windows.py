"""The bank's side of online federated windows over the exchange topics: it drives the partner's
step over one sealed window of responses (services/models/online_federated.py).

Per model one online session (`fedlr_online`: the model, the partner half the bank's half pairs
with, and this learner's fresh Paillier public key), then per window: `fedlr_plan` (the window's
join ids, `batch_index` = the window's number) -> `fedlr_scores` -> `fedlr_residuals` (the
residuals computed at each response, encrypted) -> `fedlr_masked` -> `fedlr_unmasked` ->
`fedlr_applied`. A partner that has applied the window already (a replay after either side
crashed) answers the plan with `fedlr_applied` at once. No answer within the reply timeout raises
`ReplyTimeout` (a transient failure): the learner restores its checkpoint, which holds the sealed
window, and sends it again in a new session, so the partner applies each window exactly once and
the bank confirms it exactly once.
"""
from __future__ import annotations

import asyncio
import logging
import secrets

import numpy as np

from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.errors import ValidationError
from services.core.logs import facts
from services.models.fedlr import BankCipher
from services.models.online_federated import OnlineHalf, Window
from services.protocol.channel import ExchangeChannel, ReplyTimeout
from services.protocol.exchange_messages import (
    BAD_FEDLR_MESSAGE,
    BatchPlan,
    BatchScores,
    MaskedGradient,
    OnlineSession,
    WindowApplied,
)

log = logging.getLogger(__name__)
# Windows are small (tens to hundreds of rows): their Paillier work runs in this process.
WINDOW_WORKERS = 1


class OnlineWindows:
    """This learner's online sessions with the partner, one per model, over one channel and one key."""

    def __init__(self, settings: Settings, codec: AvroCodec, reply_timeout_s: float) -> None:
        self.settings, self.codec, self.reply_timeout_s = settings, codec, reply_timeout_s
        # Made at the first window (a learner without a federated model never talks to the partner).
        self.channel: ExchangeChannel | None = None
        self.cipher: BankCipher | None = None
        self.sessions: dict[str, str] = {}  # model name -> session id

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.stop()
        if self.cipher is not None:
            self.cipher.close()

    async def apply(self, model_name: str, half: OnlineHalf, window: Window) -> str:
        """Have the partner apply `window` of `model_name`; returns the partner half's new label."""
        if self.channel is None:
            channel = ExchangeChannel(self.settings, self.codec)
            await channel.start()
            self.channel = channel
        if self.cipher is None:
            self.cipher = BankCipher(workers=WINDOW_WORKERS)  # a new key per learner: the partner gets it per session
        try:
            return await self._apply(self.channel, self.cipher, model_name, half, window)
        except ReplyTimeout:
            self.sessions.pop(model_name, None)  # reopened on the next attempt: the partner may have lost it
            raise

    async def _apply(self, channel: ExchangeChannel, cipher: BankCipher, model_name: str, half: OnlineHalf,
                     window: Window) -> str:
        session = self.sessions.get(model_name)
        if session is None:
            session = secrets.token_hex(16)
            await channel.send(OnlineSession(model_name, half.half.partner_version,
                                                  cipher.start(half.learning_rate, half.l2)), session)
            self.sessions[model_name] = session
        plan = BatchPlan(0, window.index, tuple(window.join_ids))
        sent = await channel.send(plan, session)
        answer, answer_id = await channel.reply(session, [BatchScores, WindowApplied], sent, self.reply_timeout_s)
        if isinstance(answer, WindowApplied):
            log.info("online window applied before", extra=facts(model=model_name, window=window.index))
            return _applied(answer, model_name, window)
        if answer.join_ids != plan.join_ids or answer.batch_index != window.index:
            raise ValidationError(f"partial scores of window {answer.batch_index} do not answer window {window.index}",
                                  reason=BAD_FEDLR_MESSAGE)
        residuals = await asyncio.to_thread(cipher.encrypt_residuals, 0, window.index, np.asarray(window.residuals))
        sent = await channel.send(residuals, session, answer_id)
        masked, masked_id = await channel.reply(session, [MaskedGradient], sent, self.reply_timeout_s)
        if masked.batch_index != window.index:
            raise ValidationError(f"masked gradient of window {masked.batch_index}, not {window.index}",
                                  reason=BAD_FEDLR_MESSAGE)
        sent = await channel.send(await asyncio.to_thread(cipher.unmask, masked), session, masked_id)
        applied, _ = await channel.reply(session, [WindowApplied], sent, self.reply_timeout_s)
        log.info("online window applied", extra=facts(model=model_name, window=window.index, rows=len(window.join_ids)))
        return _applied(applied, model_name, window)


def _applied(answer: WindowApplied, model_name: str, window: Window) -> str:
    if (answer.model_name, answer.window) != (model_name, window.index):
        raise ValidationError(f"the partner confirmed window {answer.window} of {answer.model_name}, "
                              f"not {window.index} of {model_name}", reason=BAD_FEDLR_MESSAGE)
    return answer.partner_version
