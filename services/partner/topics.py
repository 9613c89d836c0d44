"""Topics the partner service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.partner.features.raw, dlq.exchange.to_partner."""
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER, reads, writes
from services.protocol.stream_messages import ExchangeMessage, PartnerFeatures

RAW_PARTNER_FEATURES = "partner.features.raw"
PARTNER_FEATURES = "partner.features"
USES = (
    reads(RAW_PARTNER_FEATURES, None, "the partner's JSON feed"),
    writes(PARTNER_FEATURES, PartnerFeatures, "partner-only, compacted"),
    reads(EXCHANGE_TO_PARTNER, ExchangeMessage, "from the bank"),
    writes(EXCHANGE_TO_BANK, ExchangeMessage, "to the bank"),
)
__all__ = ["EXCHANGE_TO_BANK", "EXCHANGE_TO_PARTNER", "PARTNER_FEATURES", "RAW_PARTNER_FEATURES", "USES"]
