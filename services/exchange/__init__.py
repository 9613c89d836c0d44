"""exchange: the bank's side of the cross-party exchange (PSI alignment, partial scores and
federated training over the exchange.* topics). The messages are services/protocol's; one
party's PSI side is services/crypto/psi/link.py; the partner's side is services/partner."""
