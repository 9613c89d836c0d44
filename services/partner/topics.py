"""Topics the partner service reads and writes (schemas in schemas/, names in core/catalog.py)."""
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER

RAW_PARTNER_FEATURES = "partner.features.raw"  # reads: the partner's JSON feed
PARTNER_FEATURES = "partner.features"          # writes: PartnerFeatures (partner-only, compacted)
__all__ = ["EXCHANGE_TO_BANK", "EXCHANGE_TO_PARTNER", "PARTNER_FEATURES", "RAW_PARTNER_FEATURES"]
# reads exchange.to_partner (from the bank), writes exchange.to_bank
# dead letters: dlq.partner.features.raw, dlq.exchange.to_partner
