"""Topics the scoring service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.customer.events, dlq.customer.profiles, dlq.responses.
The exchange topics are the learner's alone (online federated windows with the partner)."""
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER, reads, writes
from services.protocol.stream_messages import (
    CustomerEvent,
    CustomerProfile,
    CustomerScores,
    ExchangeMessage,
    OfferResponse,
)

CUSTOMER_EVENTS = "customer.events"
CUSTOMER_PROFILES = "customer.profiles"
RESPONSES = "responses"
SCORES = "scores"
USES = (
    reads(CUSTOMER_EVENTS, CustomerEvent),
    reads(CUSTOMER_PROFILES, CustomerProfile, "tombstone: erase"),
    reads(RESPONSES, OfferResponse, "labels, by the learner's own consumer"),
    reads(EXCHANGE_TO_BANK, ExchangeMessage, "the partner's answers in online windows (the learner)"),
    writes(SCORES, CustomerScores),
    writes(EXCHANGE_TO_PARTNER, ExchangeMessage, "online windows: fedlr_online, fedlr_plan, fedlr_residuals, fedlr_unmasked"),
)
