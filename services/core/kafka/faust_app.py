"""The faust app every service is: lifecycle, web server, tasks; faust tables where a service keeps them."""
from __future__ import annotations

from typing import Any

import faust

from services.core.config import Settings
from services.core.kafka.faust_transport import TunedApp


def build_app(settings: Settings, service: str, uses_faust_kafka: bool = False, **extra: Any) -> faust.App:
    """A faust app tuned for the stages' batches, on Apache Kafka or the Tansu fallback."""
    (settings.data_dir / service).mkdir(parents=True, exist_ok=True)
    app = TunedApp(
        f"cipherstream-{settings.topic_prefix}{service}",
        # The stages consume through StageRunner; faust's own Kafka clients start only for apps
        # that declare faust tables (their changelogs need them).
        uses_kafka=uses_faust_kafka,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / service),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind="0.0.0.0",  # nosec B104  # pods listen on their IP; NetworkPolicies limit who calls
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        # Not faust's exactly-once: it commits a partition's transaction without the changelog
        # rows still in its producer buffer (they land in the next transaction, which a kill
        # aborts, while the source offsets stay committed), and it restores a table only up to
        # the last stable offset its consumer happened to fetch before the rebalance (none: no
        # restore at all). At-least-once with the changelog acknowledged before every commit
        # (faust_transport.ChangelogFirstProducer) and rows that keep their last source offset
        # (reporting/tallies.py) counts each message once. Still read_committed on Kafka, so a
        # table never counts an output of an aborted upstream transaction.
        processing_guarantee="at_least_once",
        read_committed=settings.exactly_once,
        idempotent=settings.exactly_once,
        producer_acks=-1,
        producer_linger=0.002,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # Every table partition is also kept, warm, by one other replica: a kill moves it there
        # without a replay of its changelog.
        table_standby_replicas=1,
        **extra,
    )
    return app
