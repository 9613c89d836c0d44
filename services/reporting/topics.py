"""Topics the reporting service reads and writes."""
from services.protocol.catalog import CHANNELS, offers_topic

OFFERS = tuple(offers_topic(channel) for channel in CHANNELS)    # reads: Offer, one topic per channel
SUPPRESSIONS = "suppressions"                                    # reads: Suppression
RESPONSES = "responses"                                          # reads: OfferResponse
# writes: the changelog of its faust table, cipherstream-<prefix>reporting-campaign_tallies-changelog
# dead letters: dlq.<topic read>
