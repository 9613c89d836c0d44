"""Topics the scoring service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.customer.events, dlq.customer.profiles, dlq.responses."""
from services.protocol.catalog import reads, writes
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, CustomerScores, OfferResponse

CUSTOMER_EVENTS = "customer.events"
CUSTOMER_PROFILES = "customer.profiles"
RESPONSES = "responses"
SCORES = "scores"
USES = (
    reads(CUSTOMER_EVENTS, CustomerEvent),
    reads(CUSTOMER_PROFILES, CustomerProfile, "tombstone: erase"),
    reads(RESPONSES, OfferResponse, "labels"),
    writes(SCORES, CustomerScores),
)
