"""Core-banking CDC records for tests, shaped as the feed sends them."""
from __future__ import annotations

import json

TS_MS = 1_764_054_000_000  # 2025-11-25 07:00 UTC


def cdc(table: str, after: dict[str, object], op: str = "c", ts_ms: int = TS_MS) -> bytes:
    return json.dumps({"op": op, "source": {"table": table, "ts_ms": ts_ms}, "after": after}).encode()


def customer_row(customer_id: str, segment: str, channel: str, consent: bool = True) -> bytes:
    return cdc("customers", {
        "customer_id": customer_id, "birth_date": "1990-03-01", "opened_at": "2014-06-01", "monthly_income": "30000.00",
        "balance": "250000.00", "products": ["debit_card"], "segment": segment, "preferred_channel": channel,
        "timezone": "Asia/Shanghai", "consent_marketing": consent}, op="r")


def transaction_row(txn_id: str, customer_id: str, kind: str, amount: str, country: str = "CN") -> bytes:
    return cdc("transactions", {
        "txn_id": txn_id, "customer_id": customer_id, "kind": kind, "amount": amount, "currency": "CNY",
        "country": country, "booked_at": "2025-11-25T07:00:00Z"})
