"""Topics the bank's exchange service reads and writes (schemas in schemas/, names in core/catalog.py)."""
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER

CUSTOMER_IDENTITIES = "customer.identities"  # reads: CustomerIdentity (tombstone: erase); the only reader
__all__ = ["CUSTOMER_IDENTITIES", "EXCHANGE_TO_BANK", "EXCHANGE_TO_PARTNER"]
# reads exchange.to_bank (from the partner), writes exchange.to_partner
# dead letters: dlq.customer.identities, dlq.exchange.to_bank
