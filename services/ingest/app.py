"""ingest: core-banking CDC records in, canonical customer events and profiles out."""
from __future__ import annotations

from services.core.errors import MessageError
from services.core.kafka import HandlerResult, Inbound, Outbound, Stage
from services.core.service import ServiceContext, bootstrap, main
from services.ingest.cdc import CdcRecord, CustomerUpdate, Erasure, normalise, parse_cdc
from services.ingest.topics import CUSTOMER_EVENTS, CUSTOMER_IDENTITIES, CUSTOMER_PROFILES, RAW_BANK_EVENTS
from services.protocol.stream_messages import CustomerEvent

SERVICE = "ingest"


def build() -> ServiceContext:
    context = bootstrap(SERVICE)
    home_country = context.settings.home_country

    async def handle(batch: list[Inbound[CdcRecord]]) -> list[HandlerResult]:
        results: list[HandlerResult] = []
        for inbound in batch:
            try:
                canonical = normalise(
                    inbound.message, source_topic=inbound.topic, source_partition=inbound.partition,
                    source_offset=inbound.offset, received_at_ms=inbound.timestamp_ms, home_country=home_country,
                )
            except MessageError as error:
                results.append(error)
                continue
            if isinstance(canonical, CustomerEvent):
                results.append([Outbound(CUSTOMER_EVENTS, canonical.customer_id, canonical)])
            elif isinstance(canonical, Erasure):
                results.append([Outbound(CUSTOMER_PROFILES, canonical.customer_id, None),
                                Outbound(CUSTOMER_IDENTITIES, canonical.customer_id, None)])
            else:
                results.append(_customer_update(canonical))
        return results

    def _customer_update(update: CustomerUpdate) -> list[Outbound]:
        customer_id = update.profile.customer_id
        outbound = [Outbound(CUSTOMER_PROFILES, customer_id, update.profile)]
        if update.identity is not None:
            outbound.append(Outbound(CUSTOMER_IDENTITIES, customer_id, update.identity))
        return outbound

    context.add_stage(Stage(SERVICE, RAW_BANK_EVENTS, parse_cdc, handle, context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
