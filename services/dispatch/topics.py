"""Topics the dispatch service reads and writes."""
from services.protocol.catalog import CHANNELS, offers_topic

SCORES = "scores"                                                # reads: CustomerScores
RESPONSES = "responses"                                          # reads: OfferResponse (opt-outs, uplift)
OFFERS = tuple(offers_topic(channel) for channel in CHANNELS)    # writes: Offer, one topic per channel
SUPPRESSIONS = "suppressions"                                    # writes: Suppression
# dead letters: dlq.scores
