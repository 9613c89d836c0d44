"""Topics the ingest service reads and writes (schemas in schemas/, names in core/catalog.py)."""
RAW_BANK_EVENTS = "bank.events.raw"      # reads: JSON CDC records
CUSTOMER_EVENTS = "customer.events"      # writes: CustomerEvent
CUSTOMER_PROFILES = "customer.profiles"  # writes: CustomerProfile, tombstone on erasure
CUSTOMER_IDENTITIES = "customer.identities"  # writes: CustomerIdentity (for PSI only), tombstone on erasure
# dead letters: dlq.bank.events.raw
