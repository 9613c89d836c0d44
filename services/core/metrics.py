"""Prometheus metrics every service exposes on /metrics. Names are a contract with the dashboards
and alert rules in ops/; change them in one commit with those."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_IN = Counter("cipherstream_events_in", "Messages consumed", ["service", "topic"])
EVENTS_OUT = Counter("cipherstream_events_out", "Messages produced", ["service", "topic"])
DEAD_LETTERS = Counter("cipherstream_dead_letters", "Messages sent to a dead-letter topic", ["service", "topic", "reason"])
PROCESSING_SECONDS = Histogram(
    "cipherstream_processing_seconds", "Time to process one batch", ["service", "stage"], buckets=LATENCY_BUCKETS_S
)
CONSUMER_LAG = Gauge("cipherstream_consumer_lag", "Messages behind the end of the partition", ["service", "topic", "partition"])
EVENT_TO_OFFER_SECONDS = Histogram(
    "cipherstream_event_to_offer_seconds", "From the raw event reaching Kafka to the offer decided", ["channel"],
    buckets=LATENCY_BUCKETS_S,
)
PAILLIER_OPERATIONS = Counter("cipherstream_paillier_operations", "Paillier operations", ["service", "op"])
MODEL_AUC = Gauge("cipherstream_model_auc", "Online (prequential) AUC of the live model", ["product"])
MODEL_KS = Gauge("cipherstream_model_ks", "Online Kolmogorov-Smirnov statistic of the live model", ["product"])
OFFERS = Counter("cipherstream_offers", "Offers sent", ["channel", "campaign"])
SUPPRESSIONS = Counter("cipherstream_suppressions", "Offers suppressed", ["reason"])
REPORT_BEYOND_RETENTION = Counter("cipherstream_report_beyond_retention", "Decisions older than the report keeps, not counted",
                                  ["topic"])
LIVE_CAMPAIGNS = Gauge("cipherstream_live_campaigns", "Campaigns dispatch is deciding with", ["source"])
CAMPAIGN_RELOAD_ERRORS = Counter("cipherstream_campaign_reload_errors", "Campaign reloads refused (bad file)")
CAMPAIGN_UPLIFT = Gauge("cipherstream_campaign_uplift", "Response rate of treatment minus holdout", ["campaign"])
PARTNER_EXCHANGE_SECONDS = Histogram(
    "cipherstream_partner_exchange_seconds", "Time of one step of the partner exchange", ["step"], buckets=LATENCY_BUCKETS_S
)
LEARNER_ACTIVE = Gauge("cipherstream_learner_active", "1 while this replica holds the learner's lease and learns", ["service"])
ROWS_LEARNED = Counter("cipherstream_rows_learned", "Responses a model has learned from", ["model"])
RESPONSES_NOT_LEARNED = Counter("cipherstream_responses_not_learned", "Terminal responses a model did not learn from",
                                ["reason"])
ONLINE_WINDOWS = Counter("cipherstream_online_windows", "Windows of online federated learning the partner applied",
                         ["model"])
LEARNER_CHECKPOINTS = Counter("cipherstream_learner_checkpoints", "Learner checkpoints saved or refused", ["result"])
LEARNER_RESTORES = Counter("cipherstream_learner_restores", "Learner restores of its checkpoint after a failure",
                           ["error"])
