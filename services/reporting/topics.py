"""Topics the reporting service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). It also writes the changelog of its faust table,
cipherstream-<prefix>reporting-campaign_tallies-changelog. Dead letters: dlq.<topic read>."""
from services.protocol.catalog import CHANNELS, offers_topic, reads
from services.protocol.stream_messages import Offer, OfferResponse, Suppression

OFFERS = tuple(offers_topic(channel) for channel in CHANNELS)
SUPPRESSIONS = "suppressions"
RESPONSES = "responses"
USES = (
    *(reads(topic, Offer, "one topic per channel") for topic in OFFERS),
    reads(SUPPRESSIONS, Suppression),
    reads(RESPONSES, OfferResponse),
)
