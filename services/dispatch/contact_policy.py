"""Contact policy in Redis: consent lists, caps, budgets and at most one offer per customer,
campaign and window, decided atomically per event by one Lua script.

For one scored event the script checks the customer's opt-out and suppression list, then walks
the ranked candidates: it skips a campaign already offered to this customer in this window, stops
at the customer's daily or weekly cap (across campaigns), skips a channel at its daily or weekly
cap and a campaign whose daily or total budget is spent, and reserves the first candidate that
passes (the idempotency key is set to `pending|<event>`, every counter incremented). After the
broker has the offer, `confirm_sent` marks it `sent`. Replays: an event whose decision is `sent`
makes no second offer; one still `pending` (the worker died between deciding and sending)
re-emits the same offer id, so nothing is lost and a channel can drop the repeat by offer id.

Keys (all expiring but the lists and the total budget):
`offer:{c}:<campaign>:<day>` idempotency; `contacts:{c}:<day>|<week>` and
`contacts:{c}:<channel>:<day>|<week>` caps; `optout:{c}` opted out (set at once by an opt-out
response); `suppress:{c}` a set of campaign ids or `*` (the suppression list);
`budget:<campaign>:<day>` and `budget:<campaign>:total` spent budgets. Budgets are shared across
customers, so the dispatch Redis is one primary (with replicas and Sentinel), not a Cluster.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

DAY_TTL_S = 3 * 24 * 3600
WEEK_TTL_S = 9 * 24 * 3600

DECIDE_LUA = """
-- KEYS[1] day contacts, KEYS[2] week contacts, KEYS[3] opt-out flag, KEYS[4] suppression set;
-- then per candidate 5 keys: idempotency, channel day, channel week, budget day, budget total
-- ARGV[1] event id, ARGV[2] daily cap, ARGV[3] weekly cap, ARGV[4] channel daily cap,
-- ARGV[5] channel weekly cap, ARGV[6] day ttl, ARGV[7] week ttl; per candidate: campaign, daily budget, total budget
if redis.call('EXISTS', KEYS[3]) == 1 then return {0, 'opted_out'} end
if redis.call('SISMEMBER', KEYS[4], '*') == 1 then return {0, 'suppression_list'} end
local candidates = (#KEYS - 4) / 5
local last_reason = 'no_eligible_campaign'
for i = 1, candidates do
  local k = 4 + (i - 1) * 5
  local a = 7 + (i - 1) * 3
  local idempotency_key = KEYS[k + 1]
  local existing = redis.call('GET', idempotency_key)
  if existing then
    if existing == 'pending|' .. ARGV[1] then return {i, 'replay'} end
    if existing == 'sent|' .. ARGV[1] then return {0, 'duplicate_event'} end
    last_reason = 'already_offered'
  elseif redis.call('SISMEMBER', KEYS[4], ARGV[a + 1]) == 1 then
    last_reason = 'suppression_list'
  else
    if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then return {0, 'frequency_cap'} end
    if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[3]) then return {0, 'weekly_cap'} end
    local daily_budget, total_budget = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if tonumber(redis.call('GET', KEYS[k + 2]) or '0') >= tonumber(ARGV[4])
        or tonumber(redis.call('GET', KEYS[k + 3]) or '0') >= tonumber(ARGV[5]) then
      last_reason = 'channel_frequency_cap'
    elseif (daily_budget > 0 and tonumber(redis.call('GET', KEYS[k + 4]) or '0') >= daily_budget)
        or (total_budget > 0 and tonumber(redis.call('GET', KEYS[k + 5]) or '0') >= total_budget) then
      last_reason = 'budget_exhausted'
    else
      redis.call('SET', idempotency_key, 'pending|' .. ARGV[1], 'EX', ARGV[6])
      for _, counted in ipairs({{KEYS[1], ARGV[6]}, {KEYS[2], ARGV[7]}, {KEYS[k + 2], ARGV[6]}, {KEYS[k + 3], ARGV[7]},
                                {KEYS[k + 4], ARGV[6]}}) do
        redis.call('INCR', counted[1]); redis.call('EXPIRE', counted[1], counted[2])
      end
      redis.call('INCR', KEYS[k + 5])
      return {i, 'reserved'}
    end
  end
end
return {0, last_reason}
"""


CONFIRM_LUA = """
-- KEYS: idempotency keys reserved by this batch; ARGV: their event ids. Keep the expiry.
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], 'sent|' .. ARGV[i], 'KEEPTTL', 'XX')
end
return #KEYS
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """Index into the candidates (None: no offer) and why."""

    chosen: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Caps:
    daily: int
    weekly: int
    channel_daily: int
    channel_weekly: int


@dataclass(frozen=True, slots=True)
class Request:
    """One event to decide: ranked candidates (campaign, channel, daily budget, total budget)."""

    event_id: str
    customer_id: str
    day: str
    week: str
    candidates: Sequence[tuple[str, str, int, int]]


class ContactPolicy:
    def __init__(self, redis: aioredis.Redis, key_prefix: str, caps: Caps) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.caps = caps
        self._decide = redis.register_script(DECIDE_LUA)
        self._confirm = redis.register_script(CONFIRM_LUA)

    def idempotency_key(self, customer_id: str, campaign_id: str, window: str) -> str:
        return f"{self.key_prefix}offer:{{{customer_id}}}:{campaign_id}:{window}"

    def _key(self, kind: str, customer_id: str, *parts: str) -> str:
        return ":".join([f"{self.key_prefix}{kind}", f"{{{customer_id}}}", *parts])

    def _keys_and_args(self, request: Request) -> tuple[list[str], list[str | int]]:
        customer, day, week = request.customer_id, request.day, request.week
        keys = [self._key("contacts", customer, day), self._key("contacts", customer, week),
                self._key("optout", customer), self._key("suppress", customer)]
        caps = self.caps
        args: list[str | int] = [request.event_id, caps.daily, caps.weekly, caps.channel_daily, caps.channel_weekly,
                                 DAY_TTL_S, WEEK_TTL_S]
        for campaign_id, channel, daily_budget, total_budget in request.candidates:
            keys += [self.idempotency_key(customer, campaign_id, day), self._key("contacts", customer, channel, day),
                     self._key("contacts", customer, channel, week), f"{self.key_prefix}budget:{campaign_id}:{day}",
                     f"{self.key_prefix}budget:{campaign_id}:total"]
            args += [campaign_id, daily_budget, total_budget]
        return keys, args

    async def decide_many(self, requests: Sequence[Request]) -> list[Decision]:
        """Decide a batch in one round trip."""
        if not requests:
            return []
        pipeline = self.redis.pipeline(transaction=False)
        for request in requests:
            keys, args = self._keys_and_args(request)
            await self._decide(keys=keys, args=args, client=pipeline)
        replies = await pipeline.execute()
        return [Decision(int(index) - 1 if int(index) > 0 else None, reason.decode() if isinstance(reason, bytes) else reason)
                for index, reason in replies]

    async def confirm_sent(self, sent: Sequence[tuple[str, str]]) -> None:
        """Mark reserved offers as sent once the broker has them: (idempotency key, event id)."""
        if sent:  # one command for the batch
            await self._confirm(keys=[key for key, _ in sent], args=[event_id for _, event_id in sent])

    async def opt_out(self, customer_ids: Sequence[str]) -> None:
        """Effective for the next decision: no expiry; consent must be given again to lift it."""
        if customer_ids:
            await self.redis.mset({self._key("optout", customer): 1 for customer in customer_ids})

    async def suppress(self, customer_id: str, campaign_id: str = "*") -> None:
        await self.redis.sadd(self._key("suppress", customer_id), campaign_id)

    async def unsuppress(self, customer_id: str, campaign_id: str = "*") -> None:
        await self.redis.srem(self._key("suppress", customer_id), campaign_id)

    async def suppressions_of(self, customer_id: str) -> set[str]:
        return {member.decode() for member in await self.redis.smembers(self._key("suppress", customer_id))}
