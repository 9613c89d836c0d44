"""Campaign performance rows: what one decision or response adds, and the per-campaign, per-day view.

A row counts the messages of one source partition for one campaign and day, and remembers the
offset of the last message it counted. Kafka delivers a partition in offset order, so a message at
or below that offset was counted before a restart and is skipped when it is read again: each
message counts once although the faust table and the consumer offsets are not written together.
Why that holds (faust at-least-once, core/kafka/faust_app.py `build_app`):
- nothing lost: a source offset is committed only once the broker has acknowledged the changelog
  rows of every message before it (core/kafka/faust_transport.py), and a restart or a standby's takeover
  restores the changelog up to its end before the source is read again from the committed offset;
- nothing twice: one row is written only by its own source partition's messages, in offset order,
  each changelog record holding the counts and the offset together, through an idempotent producer
  (no reordering or duplicate in a changelog partition). The row restored is therefore the count of
  a prefix of that partition, and `counted` skips exactly the re-read messages in it, as long as a
  partition reaches the agent in offset order, each message at least once: faust breaks that at the
  end of a recovery unless core/kafka/faust_transport.py holds it to it.
faust's exactly-once is not used: it left changelog rows out of the transaction that committed
their source offsets. What it gave beyond this, fencing a replica that lost its partitions but still
writes (it would have to miss its heartbeats for the whole session timeout and keep processing), is
not covered: such a late row could hide newer counts from a later restore.
Rows hold counts only, never a customer id, so an erasure has nothing to clear here.

Rows older than the retention are deleted (a tombstone in the changelog) while a message of the same
partition is processed: faust writes a row's changelog to the partition of the message being
processed, and every row of source partition p lives in changelog partition p.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from services.core.errors import MessageError
from services.protocol.stream_messages import Offer, OfferResponse, Suppression
from services.reporting.topics import OFFERS, RESPONSES, SUPPRESSIONS

NO_CAMPAIGN = "(none)"  # a suppression decided before any campaign was eligible
Decision = Offer | Suppression | OfferResponse
READS: dict[str, type[Decision]] = {topic: Offer for topic in OFFERS} | {SUPPRESSIONS: Suppression,
                                                                          RESPONSES: OfferResponse}


class Row(TypedDict):
    counts: dict[str, int]
    offset: int


def utc_day(ms: int) -> str:
    """The UTC date of a time in ms; a time no calendar holds is a MessageError (dead-lettered).

    >>> utc_day(1_764_460_800_000), utc_day(2**62)
    Traceback (most recent call last):
    ...
    services.core.errors.MessageError: time 4611686018427387904 ms is out of range
    """
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()
    except (OverflowError, OSError, ValueError) as error:
        raise MessageError(f"time {ms} ms is out of range", reason="bad_timestamp") from error


def tally_of(message: Decision) -> tuple[str, str, str]:
    """(campaign, day, counter) for one message: offered:<channel>, suppressed:<reason> or response:<outcome>.

    >>> from services.protocol.stream_messages import Suppression
    >>> tally_of(Suppression("e1", "C1", None, None, "frequency_cap", "", 0))
    ('(none)', '1970-01-01', 'suppressed:frequency_cap')
    """
    if isinstance(message, Offer):
        return message.campaign_id, utc_day(message.decided_at_ms), f"offered:{message.channel}"
    if isinstance(message, Suppression):
        return message.campaign_id or NO_CAMPAIGN, utc_day(message.decided_at_ms), f"suppressed:{message.reason}"
    return message.campaign_id, utc_day(message.occurred_at_ms), f"response:{message.outcome}"


def row_key(campaign: str, day: str, topic: str, partition: int) -> str:
    return f"{campaign}|{day}|{topic}|{partition}"


def parse_row_key(key: str) -> tuple[str, str, str, int]:
    """(campaign, day, topic, partition) of a `row_key` (a campaign id may itself hold a "|").

    >>> parse_row_key(row_key("a|b", "2026-11-30", "offers.sms", 3))
    ('a|b', '2026-11-30', 'offers.sms', 3)
    """
    campaign, day, topic, partition = key.rsplit("|", 3)
    return campaign, day, topic, int(partition)


def counted(row: Row | None, counter: str, offset: int) -> Row | None:
    """The row with one more `counter`, or None if the message at `offset` is already in it."""
    if row is None:
        return {"counts": {counter: 1}, "offset": offset}
    if offset <= row["offset"]:
        return None
    counts = dict(row["counts"])
    counts[counter] = counts.get(counter, 0) + 1
    return {"counts": counts, "offset": offset}


def oldest_kept_day(newest_day: str, retention_days: int) -> str:
    """The first day a report keeping `retention_days` days up to `newest_day` still holds.

    >>> oldest_kept_day("2026-11-30", 400)
    '2025-10-27'
    """
    return (dt.date.fromisoformat(newest_day) - dt.timedelta(days=retention_days - 1)).isoformat()


def expired(keys: Iterable[str], partition: int, oldest_day: str) -> list[str]:
    """The row keys of a source partition (any topic) for days before `oldest_day`.

    >>> expired(["c|2024-01-01|offers.sms|1", "c|2024-01-01|responses|0", "c|2026-11-30|offers.sms|1"], 1, "2025-10-27")
    ['c|2024-01-01|offers.sms|1']
    """
    found = []
    for key in keys:
        _campaign, day, _topic, key_partition = parse_row_key(key)
        if key_partition == partition and day < oldest_day:
            found.append(key)
    return found


def campaign_report(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{campaign: {day: {counter: n, ..., conversion_rate}}}, summed over the source partitions.

    conversion_rate is converted responses over offers made (absent while nothing was offered).
    """
    report: dict[str, dict[str, dict[str, float]]] = {}
    for key, row in rows:
        campaign, day, _topic, _partition = parse_row_key(key)
        totals = report.setdefault(campaign, {}).setdefault(day, {})
        for counter, count in row["counts"].items():
            totals[counter] = totals.get(counter, 0) + count
    for days in report.values():
        for totals in days.values():
            offered = _sum_of_kind(totals, "offered")
            if offered:
                totals["conversion_rate"] = round(totals.get("response:converted", 0) / offered, 4)
    return report


def campaign_totals(report: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Counter[str]]:
    """Each campaign's counters of a `campaign_report` summed over its days, with `offered` (every
    channel) and `suppressed` (every reason) added.

    >>> campaign_totals({"c": {"d1": {"offered:sms": 2, "conversion_rate": 0.5}, "d2": {"offered:push": 1}}})["c"]
    Counter({'offered': 3, 'offered:sms': 2, 'offered:push': 1, 'suppressed': 0})
    """
    totals: dict[str, Counter[str]] = {}
    for campaign, days in report.items():
        summed = totals.setdefault(campaign, Counter())
        for day_totals in days.values():
            summed.update({counter: int(count) for counter, count in day_totals.items() if ":" in counter})
        summed["offered"], summed["suppressed"] = _sum_of_kind(summed, "offered"), _sum_of_kind(summed, "suppressed")
    return totals


def _sum_of_kind(totals: Mapping[str, float], kind: str) -> int:
    return int(sum(count for counter, count in totals.items() if counter.startswith(f"{kind}:")))
