"""A faust app whose Kafka consumer waits at most `fetch_max_wait_ms` per fetch.

faust hard-codes `fetch_max_wait_ms=1500`. Apache Kafka answers a fetch as soon as data
arrives; the Tansu fallback holds a multi-partition fetch for the full wait, which added
~0.7-1.5 s per hop there. The wait is a setting (`CIPHERSTREAM_FETCH_MAX_WAIT_MS`) so production
can keep a longer one.
"""
from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def _transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by aiokafka when the consumer starts
            return consumer

    class TunedConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = TunedConsumer

    return Transport


class TunedApp(faust.App):
    """faust.App with the consumer fetch wait under our control, and its Kafka clients optional."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 20, uses_kafka: bool = True, **kwargs: Any) -> None:
        self._transport_type = _transport_class(fetch_max_wait_ms)
        super().__init__(*args, **kwargs)
        self.boot_strategy = self.BootStrategy(self, enable_kafka=uses_kafka)

    def _new_transport(self) -> Any:
        return self._transport_type(self.conf.broker_consumer, self)
