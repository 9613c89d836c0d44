"""Federated logistic regression between the bank and the partner (vertical, two-party, Paillier)."""
