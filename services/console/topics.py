"""Topics the console reads into its customer view (customers.py); names and records are the
catalog's (services/protocol/catalog.py). It writes only dead letters: dlq.<topic> of each."""
from services.protocol.catalog import CHANNELS, offers_topic, reads
from services.protocol.stream_messages import CustomerIdentity, CustomerProfile, CustomerScores, Offer, OfferResponse

CUSTOMER_PROFILES = "customer.profiles"
CUSTOMER_IDENTITIES = "customer.identities"
SCORES = "scores"
OFFERS = tuple(offers_topic(channel) for channel in CHANNELS)
RESPONSES = "responses"
USES = (
    reads(CUSTOMER_PROFILES, CustomerProfile, "the profile; a tombstone erases the customer from the console"),
    reads(CUSTOMER_IDENTITIES, CustomerIdentity, "the national id, shown masked"),
    reads(SCORES, CustomerScores),
    *(reads(topic, Offer, "one topic per channel") for topic in OFFERS),
    reads(RESPONSES, OfferResponse),
)
