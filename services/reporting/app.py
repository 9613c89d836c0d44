"""reporting: campaign performance (offers by channel, suppressions by reason, responses by outcome,
per campaign and day) in a faust table that restores from its changelog after a restart.

Off the event-to-offer path: it reads what dispatch and the channels already wrote. The table is
sharded like its source topics (row keys carry the source partition), so it needs every topic it
reads to have the same number of partitions, as the catalog creates them.

A faust agent, not the stage runner: its state is a faust table, restored from its changelog and
kept warm on a standby replica, which only faust's own consumer drives.
"""
from __future__ import annotations

from typing import Any

import faust

from services.core import metrics
from services.core.errors import MessageError
from services.core.kafka import now_ms
from services.core.service import ServiceContext, bootstrap, main
from services.reporting.tallies import READS, Row, campaign_report, counted, expired, oldest_kept_day, row_key, tally_of, utc_day

SERVICE = "reporting"
TABLE = "campaign_tallies"
DAY_MS = 86_400_000


def build() -> ServiceContext:
    context = bootstrap(SERVICE, uses_faust_tables=True)
    app, settings, codec = context.app, context.settings, context.codec
    logical_of = {settings.topic(name): name for name in READS}
    # standby_buffer_size=1: the replica holding a partition's standby copy applies each changelog
    # row at once (faust's default waits for 1,000), so its report and its takeover are current.
    tallies: faust.Table = app.Table(TABLE, default=None, key_type=str, partitions=settings.topic_partitions,
                                     standby_buffer_size=1,
                                     help="campaign performance rows, one per campaign, day and source partition")
    source = app.topic(*logical_of, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                       partitions=settings.topic_partitions)

    async def dead_letter(message: Any, logical: str, error: Exception) -> None:
        await context.dead_letters.send(logical, message.partition, message.offset, message.key, message.value, error,
                                        None if isinstance(error, MessageError) else "processing_error")
        await (await context.publisher.ship()).delivered()

    # Per source partition, since start: the newest day counted and the oldest day still kept.
    kept_days: dict[int, tuple[str, str]] = {}

    def count(message: Any, logical: str) -> None:
        campaign, day, counter = tally_of(codec.decode(message.value, READS[logical]))
        partition = message.partition
        if day > utc_day(now_ms() + DAY_MS):  # it would expire every row of its partition
            raise MessageError(f"{logical} dated {day}, after tomorrow", reason="future_timestamp")
        newest, oldest = kept_days.get(partition, ("", ""))
        if day > newest:
            # A new day (or the first message since start): drop this partition's rows that fell out.
            oldest = oldest_kept_day(day, settings.report_retention_days)
            kept_days[partition] = (day, oldest)
            for old in expired(list(tallies.keys()), partition, oldest):
                del tallies[old]
        if day < oldest:
            metrics.REPORT_BEYOND_RETENTION.labels(logical).inc()
            return
        key = row_key(campaign, day, logical, partition)
        row: Row | None = counted(tallies.get(key), counter, message.offset)
        if row is not None:
            tallies[key] = row

    @app.agent(source)
    async def tally(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            logical = logical_of[message.topic]
            try:
                count(message, logical)
            except Exception as error:
                await dead_letter(message, logical, error)

    @app.page("/campaigns/report")
    async def report_page(web: Any, request: Any) -> Any:
        return web.json({"campaigns": campaign_report(tallies.items()),
                         "partitions": sorted(tp.partition for tp in app.consumer.assignment()
                                              if tp.topic in logical_of)})

    return context


if __name__ == "__main__":
    main(build)
