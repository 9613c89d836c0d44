"""The style types the demo's synthetic customers fall into, as docs/style-types.md shows them.

The demo's events (`event_records`, through ingest's own CDC parsing), each customer's profile
and, for product affinity, each customer's true propensity (what a well-trained model would say;
the simulator's ground truth) go through scoring's steps: the event's features, the customer's
blended style vector, the segmenter learning batch by batch. Seeded: the same table every run.

    python -m demo.generator.styles    # prints the table docs/style-types.md holds
"""
from __future__ import annotations

import numpy as np

from demo.generator.history import HISTORY_DAY, profile_of
from demo.generator.population import SyntheticCustomer, event_records, make_population
from services.ingest.cdc import normalise, parse_cdc
from services.models.bank_features import PRODUCTS, feature_vector
from services.models.segmenter import STATE_WIDTH, Segmenter, StyleType, blend, observations
from services.protocol.stream_messages import CustomerEvent

CUSTOMERS = 2000
EVENTS = 20_000
BATCH = 50


def demo_events(customers: list[SyntheticCustomer], count: int, seed: int = 11) -> list[CustomerEvent]:
    """The demo's events as ingest makes them."""
    events = []
    for offset, (_, raw) in enumerate(event_records(customers, count, seed=seed)):
        event = normalise(parse_cdc(raw), source_topic="bank.events.raw", source_partition=0, source_offset=offset,
                          received_at_ms=0, home_country="CN")
        assert isinstance(event, CustomerEvent)
        events.append(event)
    return events


def demo_segmenter(seed: int = 0) -> Segmenter:
    """A segmenter that learned the demo's customers as scoring would have, refreshed once at the end."""
    customers = make_population(CUSTOMERS, seed=7)
    by_id = {customer.customer_id: customer for customer in customers}
    profiles = {customer.customer_id: profile_of(customer) for customer in customers}
    states: dict[str, np.ndarray] = {}
    segmenter = Segmenter(seed=seed)
    events = demo_events(customers, EVENTS)
    for start in range(0, len(events), BATCH):
        batch = events[start:start + BATCH]
        features = np.array([feature_vector(event, profiles[event.customer_id]) for event in batch])
        propensities = np.array([[by_id[event.customer_id].true_propensity(product, HISTORY_DAY) for product in PRODUCTS]
                                 for event in batch])
        seen = observations(features, [event.event_type for event in batch], propensities)
        vectors = np.empty_like(seen)
        for row, event in enumerate(batch):  # one at a time: a customer may come twice in a batch
            states[event.customer_id] = blend(states.get(event.customer_id, np.zeros(STATE_WIDTH))[None, :],
                                              seen[row:row + 1])[0]
            vectors[row] = states[event.customer_id][1:]
        segmenter.learn_many(vectors)
    segmenter.refresh()
    return segmenter


def style_table(types: list[StyleType]) -> str:
    """The style types as a markdown table, largest first."""
    lines = ["| id | name | share | what sets it apart (its centroid; all customers' mean in brackets) |",
             "| --- | --- | --- | --- |"]
    for style in sorted(types, key=lambda style: (-style.share, style.style_id)):
        lines.append(f"| {style.style_id} | {style.name} | {style.share:.0%} | {style.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(style_table(list(demo_segmenter().types.values())))
