"""Topics the bank's exchange service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.customer.identities, dlq.exchange.to_bank."""
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER, reads, writes
from services.protocol.stream_messages import CustomerIdentity, ExchangeMessage

CUSTOMER_IDENTITIES = "customer.identities"
USES = (
    reads(CUSTOMER_IDENTITIES, CustomerIdentity, "tombstone: erase; the only reader"),
    reads(EXCHANGE_TO_BANK, ExchangeMessage, "from the partner"),
    writes(EXCHANGE_TO_PARTNER, ExchangeMessage, "to the partner"),
)
__all__ = ["CUSTOMER_IDENTITIES", "EXCHANGE_TO_BANK", "EXCHANGE_TO_PARTNER", "USES"]
