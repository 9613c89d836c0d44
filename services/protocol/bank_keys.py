r"""The bank's Redis keys that more than one service reads, written down once.

The exchange service writes them; scoring, federated training and the demo read them.

| key | value | written by | read by |
| --- | --- | --- | --- |
| `nid:<identity hash>` | customer id | exchange | exchange |
| `join:<customer id>` | PSI join id (32 hex) | exchange | scoring, training |
| `partial:<join id>` | hash: model name -> `"<partner version>\|<w_p . x_p>"` | exchange | scoring |
| `sbt:<join id>` | hash: SecureBoost model name -> `"<partner version>\|<bitmap, hex>"` | exchange | scoring |

>>> keys = BankKeys("t1.")
>>> keys.join("C1"), keys.partial("ab")
('t1.join:C1', 't1.partial:ab')
>>> parse_partial_score(partial_score_value("fedlr.x@p7", -0.25))
('fedlr.x@p7', -0.25)
>>> parse_split_decisions(split_decisions_value("sbt.x@p2", b"\xa0"))
('sbt.x@p2', b'\xa0')
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BankKeys:
    prefix: str

    def nid(self, identity_hash: str) -> str:
        return f"{self.prefix}nid:{identity_hash}"

    def join(self, customer_id: str) -> str:
        return f"{self.prefix}join:{customer_id}"

    def join_pattern(self) -> str:
        """Every join key, for SCAN."""
        return f"{self.prefix}join:*"

    def partial(self, join_id: str) -> str:
        return f"{self.prefix}partial:{join_id}"

    def sbt(self, join_id: str) -> str:
        return f"{self.prefix}sbt:{join_id}"


def partial_score_value(partner_version: str, score: float) -> str:
    """One model's partial score as stored: the partner half's version travels with it, so
    scoring uses it only with the bank half trained alongside."""
    return f"{partner_version}|{score!r}"


def parse_partial_score(value: str) -> tuple[str, float]:
    version, score = value.split("|", 1)
    return version, float(score)


def split_decisions_value(partner_version: str, bitmap: bytes) -> str:
    """One SecureBoost model's partner decisions for a person as stored (one bit per partner split)."""
    return f"{partner_version}|{bitmap.hex()}"


def parse_split_decisions(value: str) -> tuple[str, bytes]:
    version, bitmap = value.rsplit("|", 1)
    return version, bytes.fromhex(bitmap)
