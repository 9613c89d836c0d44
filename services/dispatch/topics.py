"""Topics the dispatch service reads and writes; names and records are the catalog's
(services/protocol/catalog.py). Dead letters: dlq.scores, dlq.responses."""
from services.protocol.catalog import CHANNELS, offers_topic, reads, writes
from services.protocol.stream_messages import CustomerScores, Offer, OfferResponse, Suppression

SCORES = "scores"
RESPONSES = "responses"
OFFERS = tuple(offers_topic(channel) for channel in CHANNELS)
SUPPRESSIONS = "suppressions"
USES = (
    reads(SCORES, CustomerScores),
    reads(RESPONSES, OfferResponse, "opt-outs, uplift"),
    *(writes(topic, Offer, "one topic per channel") for topic in OFFERS),
    writes(SUPPRESSIONS, Suppression),
)
