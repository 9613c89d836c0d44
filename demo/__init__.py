"""The demo, which is not a service: `driver.py` runs both parties end to end on the embedded parts
(`make demo`, `cipherstream demo`) and `generator/` makes the synthetic customers, events, partner
feed and channel responses it replays (tests and benchmarks use them too)."""
