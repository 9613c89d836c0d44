"""Contact policy in Redis: at most one offer per customer, campaign and window, and a daily cap.

One Lua script decides atomically for one event: it walks the ranked candidates, skips a
campaign already offered to this customer in this window, stops at the daily cap, and
reserves the first candidate that passes (the idempotency key is set to `pending|<event>` and
the counters incremented). After the broker has the offer, `confirm_sent` marks it `sent`.
Replays: an event whose decision is `sent` makes no second offer; one still `pending` (the
worker died between deciding and sending) re-emits the same offer id, so nothing is lost and a
channel can drop the repeat by offer id. Keys carry the customer in a {hash tag}, so all keys
of one decision sit in one Redis Cluster slot.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

WINDOW_TTL_S = 3 * 24 * 3600

DECIDE_LUA = """
-- KEYS[1]: the customer's offers today; then per candidate: idempotency key, channel count key
-- ARGV[1]: event id, ARGV[2]: daily cap per customer, ARGV[3]: daily cap per channel, ARGV[4]: ttl
local candidates = (#KEYS - 1) / 2
local last_reason = 'no_eligible_campaign'
for i = 1, candidates do
  local idempotency_key = KEYS[2 * i]
  local channel_key = KEYS[2 * i + 1]
  local existing = redis.call('GET', idempotency_key)
  if existing then
    if existing == 'pending|' .. ARGV[1] then return {i, 'replay'} end
    if existing == 'sent|' .. ARGV[1] then return {0, 'duplicate_event'} end
    last_reason = 'already_offered'
  else
    if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then return {0, 'frequency_cap'} end
    if tonumber(redis.call('GET', channel_key) or '0') >= tonumber(ARGV[3]) then
      last_reason = 'channel_frequency_cap'
    else
      redis.call('SET', idempotency_key, 'pending|' .. ARGV[1], 'EX', ARGV[4])
      redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], ARGV[4])
      redis.call('INCR', channel_key); redis.call('EXPIRE', channel_key, ARGV[4])
      return {i, 'reserved'}
    end
  end
end
return {0, last_reason}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """Index into the candidates (None: no offer) and why."""

    chosen: int | None
    reason: str


class ContactPolicy:
    def __init__(self, redis: aioredis.Redis, key_prefix: str, *, daily_cap: int, channel_daily_cap: int | None = None) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.daily_cap = daily_cap
        self.channel_daily_cap = channel_daily_cap if channel_daily_cap is not None else daily_cap
        self._decide = redis.register_script(DECIDE_LUA)

    def idempotency_key(self, customer_id: str, campaign_id: str, window: str) -> str:
        return f"{self.key_prefix}offer:{{{customer_id}}}:{campaign_id}:{window}"

    def _day_key(self, customer_id: str, window: str) -> str:
        return f"{self.key_prefix}contacts:{{{customer_id}}}:{window}"

    def _channel_key(self, customer_id: str, channel: str, window: str) -> str:
        return f"{self.key_prefix}contacts:{{{customer_id}}}:{channel}:{window}"

    async def decide_many(
        self, requests: Sequence[tuple[str, str, str, Sequence[tuple[str, str]]]],
    ) -> list[Decision]:
        """Decide a batch in one round trip. Each request: (event id, customer, window, [(campaign, channel)])."""
        pipeline = self.redis.pipeline(transaction=False)
        for event_id, customer_id, window, candidates in requests:
            keys = [self._day_key(customer_id, window)]
            for campaign_id, channel in candidates:
                keys += [self.idempotency_key(customer_id, campaign_id, window), self._channel_key(customer_id, channel, window)]
            await self._decide(keys=keys, args=[event_id, self.daily_cap, self.channel_daily_cap, WINDOW_TTL_S], client=pipeline)
        replies = await pipeline.execute()
        return [Decision(int(index) - 1 if int(index) > 0 else None, reason.decode() if isinstance(reason, bytes) else reason)
                for index, reason in replies]

    async def confirm_sent(self, sent: Sequence[tuple[str, str]]) -> None:
        """Mark reserved offers as sent once the broker has them: (idempotency key, event id)."""
        if not sent:
            return
        pipeline = self.redis.pipeline(transaction=False)
        for key, event_id in sent:
            pipeline.set(key, f"sent|{event_id}", keepttl=True, xx=True)
        await pipeline.execute()
