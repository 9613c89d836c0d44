"""Contact policy in Redis: consent lists, caps, budgets and at most one offer per customer,
campaign and window, decided by one Lua script per batch (atomically, each event in order).

For one scored event the script checks the customer's opt-out and suppression list, then walks
the ranked candidates: it skips a campaign already offered to this customer in this window, stops
at the customer's daily or weekly cap (across campaigns), skips a channel at its daily or weekly
cap and a campaign whose daily or total budget is spent, and reserves the first candidate that
passes (the idempotency key is set to `pending|<event>`, every counter incremented). After the
broker has the offer, `confirm_sent` marks it `sent`. Replays: an event whose decision is `sent`
makes no second offer; one still `pending` (the worker died between deciding and sending)
re-emits the same offer id, so nothing is lost and a channel can drop the repeat by offer id.

Uplift membership rides along: the script adds held-out customers to `holdout:<campaign>`, the
confirmation adds treated ones to `treated:<campaign>`.

Keys (all expiring but the lists, the uplift sets and the total budget):
`offer:{c}:<campaign>:<day>` idempotency; `contacts:{c}:<day>|<week>` and
`contacts:{c}:<channel>:<day>|<week>` caps; `optout:{c}` opted out (set at once by an opt-out
response); `suppress:{c}` a set of campaign ids or `*` (the suppression list);
`budget:<campaign>:<day>` and `budget:<campaign>:total` spent budgets. Budgets are shared across
customers, so the dispatch Redis is one primary (with replicas and Sentinel), not a Cluster.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

DAY_TTL_S = 3 * 24 * 3600
WEEK_TTL_S = 9 * 24 * 3600

# One call decides a whole batch, in order, atomically. The script builds every key from the prefix
# and the customer (the batch's JSON carries ids, not ~30 key strings per event: packing those
# arguments was most of dispatch's time), so the dispatch Redis is a primary, not a Cluster.
DECIDE_LUA = """
-- ARGV[1] key prefix; ARGV[2] JSON {caps: [daily, weekly, channel daily, channel weekly], ttl: [day s, week s],
-- events: [[event id, customer, day, week, [[campaign, channel, daily budget, total budget], ...], [holdout campaign, ...]]]}
-- Returns, per event, the chosen candidate (1-based, 0: none) and the reason.
local p = ARGV[1]
local batch = cjson.decode(ARGV[2])
local daily_cap, weekly_cap, channel_daily_cap, channel_weekly_cap = batch.caps[1], batch.caps[2], batch.caps[3], batch.caps[4]
local day_ttl, week_ttl = batch.ttl[1], batch.ttl[2]
local function num(key) return tonumber(redis.call('GET', key) or '0') end
local function count(key, ttl) redis.call('INCR', key); redis.call('EXPIRE', key, ttl) end

local function decide(event)
  local event_id, customer, day, week, candidates = event[1], event[2], event[3], event[4], event[5]
  local tag = '{' .. customer .. '}'
  for _, campaign in ipairs(event[6]) do redis.call('SADD', p .. 'holdout:' .. campaign, customer) end
  if #candidates == 0 then return 0, 'no_candidate' end
  if redis.call('EXISTS', p .. 'optout:' .. tag) == 1 then return 0, 'opted_out' end
  local suppress = p .. 'suppress:' .. tag
  if redis.call('SISMEMBER', suppress, '*') == 1 then return 0, 'suppression_list' end
  local day_contacts, week_contacts = p .. 'contacts:' .. tag .. ':' .. day, p .. 'contacts:' .. tag .. ':' .. week
  local last_reason = 'no_eligible_campaign'
  for i, candidate in ipairs(candidates) do
    local campaign, channel, daily_budget, total_budget = candidate[1], candidate[2], candidate[3], candidate[4]
    local idempotency_key = p .. 'offer:' .. tag .. ':' .. campaign .. ':' .. day
    local existing = redis.call('GET', idempotency_key)
    if existing then
      if existing == 'pending|' .. event_id then return i, 'replay' end
      if existing == 'sent|' .. event_id then return 0, 'duplicate_event' end
      last_reason = 'already_offered'
    elseif redis.call('SISMEMBER', suppress, campaign) == 1 then
      last_reason = 'suppression_list'
    else
      if num(day_contacts) >= daily_cap then return 0, 'frequency_cap' end
      if num(week_contacts) >= weekly_cap then return 0, 'weekly_cap' end
      local channel_day = p .. 'contacts:' .. tag .. ':' .. channel .. ':' .. day
      local channel_week = p .. 'contacts:' .. tag .. ':' .. channel .. ':' .. week
      local budget_day, budget_total = p .. 'budget:' .. campaign .. ':' .. day, p .. 'budget:' .. campaign .. ':total'
      if num(channel_day) >= channel_daily_cap or num(channel_week) >= channel_weekly_cap then
        last_reason = 'channel_frequency_cap'
      elseif (daily_budget > 0 and num(budget_day) >= daily_budget)
          or (total_budget > 0 and num(budget_total) >= total_budget) then
        last_reason = 'budget_exhausted'
      else
        redis.call('SET', idempotency_key, 'pending|' .. event_id, 'EX', day_ttl)
        count(day_contacts, day_ttl); count(week_contacts, week_ttl)
        count(channel_day, day_ttl); count(channel_week, week_ttl); count(budget_day, day_ttl)
        redis.call('INCR', budget_total)
        return i, 'reserved'
      end
    end
  end
  return 0, last_reason
end

local out = {}
for _, event in ipairs(batch.events) do
  local chosen, reason = decide(event)
  out[#out + 1] = chosen
  out[#out + 1] = reason
end
return out
"""


CONFIRM_LUA = """
-- ARGV[1] key prefix; ARGV[2] JSON [[customer, campaign, window, event id], ...]: offers the broker has.
-- Mark each reserved idempotency key sent (keeping its expiry) and count the customer as treated.
local p = ARGV[1]
for _, sent in ipairs(cjson.decode(ARGV[2])) do
  local customer, campaign = sent[1], sent[2]
  redis.call('SET', p .. 'offer:{' .. customer .. '}:' .. campaign .. ':' .. sent[3], 'sent|' .. sent[4], 'KEEPTTL', 'XX')
  redis.call('SADD', p .. 'treated:' .. campaign, customer)
end
return 0
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
    """One event to decide: ranked candidates (campaign, channel, daily budget, total budget), and
    the campaigns whose control group holds this customer (recorded for uplift)."""

    event_id: str
    customer_id: str
    day: str
    week: str
    candidates: Sequence[tuple[str, str, int, int]]
    holdouts: Sequence[str] = ()


class ContactPolicy:
    def __init__(self, redis: aioredis.Redis, key_prefix: str, caps: Caps) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.caps = caps
        self._decide = redis.register_script(DECIDE_LUA)
        self._confirm = redis.register_script(CONFIRM_LUA)

    def _key(self, kind: str, customer_id: str, *parts: str) -> str:
        return ":".join([f"{self.key_prefix}{kind}", f"{{{customer_id}}}", *parts])

    async def decide_many(self, requests: Sequence[Request]) -> list[Decision]:
        """Decide a batch in one script call, in order (a customer twice in a batch sees the first reservation)."""
        if not requests:
            return []
        caps = self.caps
        batch = {"caps": [caps.daily, caps.weekly, caps.channel_daily, caps.channel_weekly], "ttl": [DAY_TTL_S, WEEK_TTL_S],
                 "events": [[r.event_id, r.customer_id, r.day, r.week, [list(c) for c in r.candidates], list(r.holdouts)]
                            for r in requests]}
        replies = await self._decide(keys=[], args=[self.key_prefix, json.dumps(batch, separators=(",", ":"))])
        return [Decision(int(index) - 1 if int(index) > 0 else None, reason.decode() if isinstance(reason, bytes) else str(reason))
                for index, reason in zip(replies[::2], replies[1::2])]

    async def confirm_sent(self, sent: Sequence[tuple[str, str, str, str]]) -> None:
        """The broker has these offers (customer, campaign, window, event id): mark them sent, count them treated."""
        if sent:
            await self._confirm(keys=[], args=[self.key_prefix, json.dumps(sent, separators=(",", ":"))])

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
