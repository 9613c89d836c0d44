"""Topics the ingest service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.bank.events.raw."""
from services.protocol.catalog import reads, writes
from services.protocol.stream_messages import CustomerEvent, CustomerIdentity, CustomerProfile

RAW_BANK_EVENTS = "bank.events.raw"
CUSTOMER_EVENTS = "customer.events"
CUSTOMER_PROFILES = "customer.profiles"
CUSTOMER_IDENTITIES = "customer.identities"
USES = (
    reads(RAW_BANK_EVENTS, None, "core-banking CDC records (JSON)"),
    writes(CUSTOMER_EVENTS, CustomerEvent),
    writes(CUSTOMER_PROFILES, CustomerProfile, "tombstone on erasure"),
    writes(CUSTOMER_IDENTITIES, CustomerIdentity, "for PSI only; tombstone on erasure"),
)
