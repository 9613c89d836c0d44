"""The reporting service on the real embedded broker: its faust table counts each decision once,
dead-letters what it cannot read, and restores from its changelog after a kill -9."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.embedded.processes import ManagedProcess
from services.core.kafka import now_ms
from services.core.supervisor import ServiceRunner, wait_ready
from services.core.topic_names import dlq_name
from services.protocol.stream_messages import Offer, OfferResponse, Suppression
from services.reporting.tallies import utc_day

DAY_MS = 1_764_460_800_000  # 2025-11-30T00:00:00Z
DAY = 86_400_000
CAMPAIGNS = ("credit_card_upgrade", "savings_boost")


def _offer(index: int, campaign: str, channel: str) -> Offer:
    return Offer(f"o{index}", f"C{index:05d}", campaign, "credit_card", channel, "hello", 0.4, 0.3, "v1", "CS-1", (),
                 f"e{index}", "card_spend", "all", "day", DAY_MS, DAY_MS + index)


def _report(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/campaigns/report", timeout=5) as answer:
        return json.loads(answer.read())["campaigns"]


async def _report_becomes(port: int, expected: dict[str, Any], timeout_s: float = 60.0,
                          process: ManagedProcess | None = None) -> dict[str, Any]:
    """Polls the report until it equals `expected`; a dead `process` fails at once with its log."""
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process is not None and process.process.poll() is not None:
            raise AssertionError(f"{process.name} exited with {process.process.returncode}: "
                                 f"{process.log_path.read_text()[-4000:]}")
        try:
            report = await asyncio.to_thread(_report, port)
        except urllib.error.URLError:
            await asyncio.sleep(0.2)  # a living process between two answers: ask again
            continue
        if report == expected:
            break
        await asyncio.sleep(0.2)
    return report


def _expected(counts: Counter[tuple[str, str]]) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for (campaign, counter), count in counts.items():
        expected.setdefault(campaign, {}).setdefault("2025-11-30", {})[counter] = count
    for days in expected.values():
        totals = days["2025-11-30"]
        offered = sum(count for counter, count in totals.items() if counter.startswith("offered:"))
        if offered:
            totals["conversion_rate"] = round(totals.get("response:converted", 0) / offered, 4)
    return expected


async def _send(settings: Settings, codec: AvroCodec, first: int, count: int, counts: Counter[tuple[str, str]]) -> None:
    """`count` offers, a suppression for every third and a conversion for every fourth; tallied into `counts`."""
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
    for index in range(first, first + count):
        campaign, channel = CAMPAIGNS[index % 2], ("email", "push")[index // 2 % 2]
        offer = _offer(index, campaign, channel)
        by_topic.setdefault(f"offers.{channel}", []).append((offer.customer_id.encode(), codec.encode(offer)))
        counts[campaign, f"offered:{channel}"] += 1
        if index % 3 == 0:
            suppression = Suppression(f"s{index}", offer.customer_id, campaign, channel, "frequency_cap", "", DAY_MS)
            by_topic.setdefault("suppressions", []).append((offer.customer_id.encode(), codec.encode(suppression)))
            counts[campaign, "suppressed:frequency_cap"] += 1
        if index % 4 == 0:
            response = OfferResponse(f"r{index}", offer.offer_id, offer.event_id, offer.customer_id, campaign,
                                     "credit_card", channel, "converted", DAY_MS + 60_000)
            by_topic.setdefault("responses", []).append((offer.customer_id.encode(), codec.encode(response)))
            counts[campaign, "response:converted"] += 1
    for topic, records in by_topic.items():
        await produce(settings.kafka_bootstrap_servers, settings.topic(topic), records)


@pytest.mark.slow  # a kill -9 and a restart from the changelog
async def test_report_counts_each_decision_once_and_survives_kill_from_its_changelog(
    settings: Settings, services: ServiceRunner, codec: AvroCodec,
) -> None:
    services.start("reporting")
    counts: Counter[tuple[str, str]] = Counter()
    await _send(settings, codec, 0, 400, counts)
    await produce(settings.kafka_bootstrap_servers, settings.topic("offers.email"), [(b"C-bad", b"\x00\x00\x00\x00")])
    expected = _expected(counts)
    assert await _report_becomes(services.ports["reporting"], expected) == expected

    # kill -9 at once: offsets of the last messages may not be committed, so some are read again
    # and must not count twice; the counts themselves come back from the table's changelog.
    services.running["reporting"].kill()
    started = time.monotonic()
    restarted = services.start("reporting", wait=False)
    await asyncio.to_thread(wait_ready, services.ports["reporting"], restarted, 90.0)
    ready_s = time.monotonic() - started
    assert await _report_becomes(services.ports["reporting"], expected) == expected
    print(f"reporting restored its table from the changelog and was ready {ready_s:.1f} s after kill -9")

    await _send(settings, codec, 400, 40, counts)
    expected = _expected(counts)
    assert await _report_becomes(services.ports["reporting"], expected) == expected

    dead = await consume(settings.kafka_bootstrap_servers, [settings.topic(dlq_name("offers.email"))],
                         until=lambda got: len(got) >= 1, timeout_s=30)
    letter = codec.decode(dead[0].value, DeadLetter)
    assert (letter.service, letter.reason, letter.key) == ("reporting", "truncated", b"C-bad")


async def test_rows_past_the_retention_are_dropped_late_ones_not_counted_future_ones_dead_lettered(
    settings: Settings, services: ServiceRunner, codec: AvroCodec,
) -> None:
    services.start("reporting")
    port, topic = services.ports["reporting"], settings.topic("offers.sms")
    today_ms = now_ms()

    def offer_at(index: int, at_ms: int) -> tuple[bytes, bytes]:
        # One customer, so one partition: the rows below all live in the same table shard.
        offer = dataclasses.replace(_offer(index, "savings_boost", "sms"), customer_id="C-same", decided_at_ms=at_ms)
        return b"C-same", codec.encode(offer)

    def days(report: dict[str, Any]) -> dict[str, float]:
        return {day: totals["offered:sms"] for day, totals in report.get("savings_boost", {}).items()}

    async def days_become(expected: dict[str, float]) -> dict[str, float]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and days(await asyncio.to_thread(_report, port)) != expected:
            await asyncio.sleep(0.2)
        return days(await asyncio.to_thread(_report, port))

    old_day, today = utc_day(today_ms - 500 * DAY), utc_day(today_ms)
    await produce(settings.kafka_bootstrap_servers, topic, [offer_at(1, today_ms - 500 * DAY)])
    assert await days_become({old_day: 1}) == {old_day: 1}
    # A message of a newer day drops the rows more than 400 days older; a late one that old is not counted.
    await produce(settings.kafka_bootstrap_servers, topic, [offer_at(2, today_ms), offer_at(3, today_ms - 450 * DAY),
                                                            offer_at(4, today_ms + 3 * DAY), offer_at(5, today_ms)])
    assert await days_become({today: 2}) == {today: 2}

    dead = await consume(settings.kafka_bootstrap_servers, [settings.topic(dlq_name("offers.sms"))],
                         until=lambda got: len(got) >= 1, timeout_s=30)
    letter = codec.decode(dead[0].value, DeadLetter)
    assert (letter.reason, codec.decode(letter.value, Offer).offer_id) == ("future_timestamp", "o4")
