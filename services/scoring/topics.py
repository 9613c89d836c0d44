"""Topics the scoring service reads and writes."""
CUSTOMER_EVENTS = "customer.events"      # reads: CustomerEvent
CUSTOMER_PROFILES = "customer.profiles"  # reads: CustomerProfile (tombstone: erase)
RESPONSES = "responses"                  # reads: OfferResponse (labels)
SCORES = "scores"                        # writes: CustomerScores
# dead letters: dlq.customer.events, dlq.customer.profiles, dlq.responses
