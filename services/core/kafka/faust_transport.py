"""faust's Kafka transport with the settings and the flush our faust tables depend on.

The consumer waits at most `fetch_max_wait_ms` per fetch: faust hard-codes
`fetch_max_wait_ms=1500`. Apache Kafka answers a fetch as soon as data arrives; the Tansu fallback
holds a multi-partition fetch for the full wait, which added ~0.7-1.5 s per hop there. The wait is a
setting (`CIPHERSTREAM_FETCH_MAX_WAIT_MS`) so production can keep a longer one.

Table changelogs must be in Kafka before the source offsets that produced them are committed
(services/reporting/tallies.py says why that, with the rows' offsets, counts each message once).
faust at-least-once flushes its producer before every commit, but its flush is not a barrier:
`ProducerBuffer.flush` returns as soon as one queued message takes more than 0.1 s to hand over,
with the rest still queued, and a send that failed is only logged. `ChangelogFirstProducer.flush`
waits for the broker's acknowledgement of every message queued so far, and raises if one failed,
so the commit does not happen.

faust also loses messages it has fetched, around the end of a table's recovery (each seen on a
worker restarted after kill -9). When recovery completes it resumes the source partitions, then
seeks them to the committed offsets, then resumes the flow, which empties every stream queue:
- what the fetcher delivered before the flow resumed is dropped from the queues, though the
  consumer's position is past it; faust records the hole as a gap and commits over it (seen:
  `add_gap suppressions-0 19..67`: the worker never counted 19-66). The standby changelog rows
  queued by then are dropped the same way. `KeepQueuedOnResume` empties the queues only when the
  flow was suspended, i.e. on the first resume after a rebalance, as they were meant to be;
- records fetched before the seek reach the streams mixed with those read again after it, a later
  offset before an earlier one (seen: offers.push-0 counted 36, then skipped 34 as already
  counted), and a partition paused while its records were being fetched loses them too (faust's
  pause is its own filter: the consumer's position has moved past what it filters out).
  `TunedConsumer` resumes the stream partitions only once the seek is done;
- each fetch is handed faust's live set of active partitions: when recovery pauses the last of them
  mid-fetch, aiokafka takes the empty set for "all" and returns the paused stream partitions'
  records, which faust drops (seen: `getmany {offers.email-0: (36, 100, paused)}`, then the
  partition went on at 101). `TunedConsumer._getmany` fetches on a copy.

With `read_committed` (on Apache Kafka) the consumer skips what an aborted upstream transaction
wrote, as every other consumer of the suite does; faust only reads committed in its exactly-once
mode, which reporting does not use (core/kafka/faust_app.py `build_app` says why).
"""
from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import FutureMessage
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

# How long a flush (before each commit, and before a rebalance gives partitions away) waits for the
# broker to acknowledge the changelog messages queued before it; past it the commit fails (and
# with it the worker: its replacement replays from the last commit).
CHANGELOG_ACK_TIMEOUT_S = 60.0


def _transport_class(fetch_max_wait_ms: int, read_committed: bool, idempotent: bool) -> type[faust_aiokafka.Transport]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Both read by aiokafka when the consumer starts.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            if read_committed:
                consumer._isolation_level = "read_committed"
            return consumer

    class TunedConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._resume_after_seek: set[Any] = set()  # stream partitions held until the next perform_seek
            super().__init__(*args, **kwargs)

        def resume_partitions(self, tps: Any) -> None:
            # faust resumes the stream partitions and then seeks them (Recovery.on_recovery_completed):
            # they start flowing at the seek's end instead, so nothing is fetched before it.
            tps = set(tps)
            stream = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._resume_after_seek.update(stream)
            super().resume_partitions(tps - stream)

        def pause_partitions(self, tps: Any) -> None:
            tps = set(tps)
            self._resume_after_seek.difference_update(tps)
            super().pause_partitions(tps)

        async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
            # The fetch runs in the consumer's thread on the set it is given: faust's own, live one.
            # Emptied meanwhile (recovery pausing the changelogs when it is done), aiokafka reads it
            # as "every partition" and hands over paused ones too, whose records faust then drops.
            return await super()._getmany(None if active_partitions is None else set(active_partitions), timeout)

        async def perform_seek(self) -> None:
            try:
                await super().perform_seek()
            finally:
                held, self._resume_after_seek = self._resume_after_seek & self.assignment(), set()
                super().resume_partitions(held)

    class ChangelogFirstProducer(faust_aiokafka.Producer):
        """faust's producer whose flush waits until every message queued before it is acknowledged."""

        def __post_init__(self) -> None:
            super().__post_init__()
            self._unacknowledged: set[FutureMessage] = set()

        def _settings_extra(self) -> dict[str, Any]:
            # Idempotent on Kafka: a retried produce neither duplicates nor reorders a changelog
            # partition, so its last row for a key is the newest one (the Tansu fallback has none).
            return {"acks": "all", "enable_idempotence": True} if idempotent else dict(super()._settings_extra())

        def send_soon(self, fut: FutureMessage) -> None:
            # Table writes (changelog rows, tombstones) arrive here, queued in faust's buffer.
            self._unacknowledged.add(fut)
            fut.add_done_callback(self._unacknowledged.discard)
            super().send_soon(fut)

        async def flush(self) -> None:
            queued = list(self._unacknowledged)
            if queued:
                # asyncio.wait, not wait_for: a timeout must not cancel faust's own futures.
                _, late = await asyncio.wait(queued, timeout=CHANGELOG_ACK_TIMEOUT_S)
                if late:
                    raise TimeoutError(f"{len(late)} changelog messages not acknowledged "
                                               f"within {CHANGELOG_ACK_TIMEOUT_S:.0f} s")
                for fut in queued:  # a failed or dropped send: faust's commit fails, as it must
                    if fut.cancelled():
                        raise RuntimeError("a changelog message was dropped before it was sent")
                    error = fut.exception()
                    if error is not None:
                        raise error
            await super().flush()

    class Transport(faust_aiokafka.Transport):
        Consumer = TunedConsumer
        Producer = ChangelogFirstProducer

    return Transport


class KeepQueuedOnResume(FlowControlEvent):
    """faust's flow control, whose resume empties the stream queues only if the flow was suspended."""

    def resume(self) -> None:
        if self.is_active():
            # Already flowing (recovery resumes it again when it completes): the queues hold what was
            # fetched since this assignment's seeks, which nothing will fetch again.
            return
        super().resume()


class TunedApp(faust.App):
    """faust.App with the consumer fetch wait under our control, and its Kafka clients optional."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 20, uses_kafka: bool = True, read_committed: bool = False,
                 idempotent: bool = False, **kwargs: Any) -> None:
        self._transport_type = _transport_class(fetch_max_wait_ms, read_committed, idempotent)
        super().__init__(*args, **kwargs)
        self.boot_strategy = self.BootStrategy(self, enable_kafka=uses_kafka)

    def _new_transport(self) -> Any:
        return self._transport_type(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return KeepQueuedOnResume(loop=self.loop)
