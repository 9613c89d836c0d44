"""One active worker, one hot standby: a lease held by membership of a consumer group.

Every replica of a service that must run once at a time (the exchange and the partner keep one
protocol session each; see docs/reliability.md) joins the group `<group>.lease` on a topic with a
single partition, `lease.<service>`. Kafka's group coordinator gives that partition to exactly
one live member: that member is active and starts its stage runner; the others wait, warm (started,
connected, their keys and models loaded). The sticky assignor keeps the partition with its holder
when another replica joins. When the active one dies, the coordinator drops it after
`failover_session_timeout_s` and hands the partition to a standby, which starts its runner at once.

Fencing: the active worker's transactional id names the role, not the replica
(`<group>.active`), so the new active's producer bumps the epoch and the broker refuses every
later write or commit of the old one, also if it only paused and comes back. A replica whose lease
is revoked while it still runs exits, and its supervisor starts it again as a standby.

Not on the stage runner: its consumer never reads a record; only its group membership counts.

A service whose replicas all serve but of which one must do one job (scoring: all score, one
learns) runs that job alone under a lease (`run_while_active`): the job is cancelled when the
lease is lost and started again when it comes back; the replica serves on meanwhile. Such a job
fences its own writes (the learner's checkpoints compare and set in the registry), as the lease
alone cannot stop a replica that paused past its session from writing once more.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from services.core.config import Settings
from services.core.kafka import create_topics, stage_group_id
from services.core.logs import facts

log = logging.getLogger(__name__)
# The worker id every active replica uses: the role, so that taking over fences the last holder.
ACTIVE_WORKER_ID = "active"
# Exit status of a replica that lost its lease while running (not a crash: restart as standby).
LEASE_LOST_EXIT = 75


def lease_topic(settings: Settings, service: str) -> str:
    return settings.topic(f"lease.{service}")


def lease_group(settings: Settings, service: str) -> str:
    return f"{stage_group_id(settings, service)}.lease"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Every rebalance revokes, then assigns (Kafka's eager protocol); the sticky assignor gives the
    partition back to its holder, so only the assignment says whether this replica still holds it."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            self.lease.active.set()
        elif self.lease.active.is_set():
            self.lease.lost()


class Lease:
    """Holds (or waits for) the service's lease; `active` is set while this replica holds it."""

    def __init__(self, settings: Settings, service: str, on_lost: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.service = service
        self.active = asyncio.Event()
        self._on_lost = on_lost or _exit_as_standby
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topic = lease_topic(self.settings, self.service)
        await create_topics(self.settings.kafka_bootstrap_servers, [topic], partitions=1)
        timeout_ms = int(self.settings.failover_session_timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=lease_group(self.settings, self.service),
            client_id=f"cipherstream-{self.service}-lease", enable_auto_commit=False,
            session_timeout_ms=timeout_ms, heartbeat_interval_ms=max(100, timeout_ms // 5),
            rebalance_timeout_ms=timeout_ms,
            # A replica that joins (a standby starting, a restart) must not take the lease from its holder.
            partition_assignment_strategy=(StickyPartitionAssignor,),
        )
        self._consumer.subscribe([topic], listener=_Listener(self))
        await self._consumer.start()
        # Membership lives only while the consumer polls: a standby polls an empty topic forever.
        asyncio.get_running_loop().create_task(self._keep_polling())

    async def _keep_polling(self) -> None:
        assert self._consumer is not None
        while True:
            await self._consumer.getmany(timeout_ms=500)

    async def wait_active(self) -> None:
        await self.active.wait()
        log.info("lease taken: this replica is active", extra=facts(service=self.service))

    def lost(self) -> None:
        log.error("lease lost while active: exiting to rejoin as standby", extra=facts(service=self.service))
        self._on_lost()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def _exit_as_standby() -> None:
    os._exit(LEASE_LOST_EXIT)  # no clean-up: the new active already owns every side effect


async def run_when_active(lease: Lease, start: Callable[[], Awaitable[None]]) -> None:
    """Take the lease (waiting as a standby until then), then start the work."""
    await lease.start()
    await lease.wait_active()
    await start()


async def run_while_active(settings: Settings, service: str, work: Callable[[], Awaitable[None]],
                           restart_after_s: float = 1.0) -> None:
    """Run `work` whenever this replica holds the service's lease, cancelling it when the lease is
    lost; the replica itself carries on (it does not exit as `run_when_active`'s do)."""
    running: asyncio.Future[None] | None = None

    def revoked() -> None:
        log.warning("lease lost: stopping the work only this replica did", extra=facts(service=service))
        lease.active.clear()
        if running is not None:
            running.cancel()

    lease = Lease(settings, service, on_lost=revoked)
    await lease.start()
    try:
        while True:
            await lease.wait_active()
            running = asyncio.ensure_future(work())
            try:
                await running
            except asyncio.CancelledError:
                if lease.active.is_set():
                    raise  # cancelled from outside: the service is stopping
            except Exception:  # a bug in the work: say so, and start it again while the lease lasts
                log.exception("work under the lease failed", extra=facts(service=service))
                await asyncio.sleep(restart_after_s)
            running = None
    finally:
        if running is not None:
            running.cancel()
        await lease.stop()
