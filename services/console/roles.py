"""Roles and their named permissions: the one table every console endpoint is checked against.

An endpoint names one permission (`web.require("campaigns.write")`), or none for one any logged-in
user may call (their own session and account), or is public (login, health, metrics, the
OpenAPI document). A user holds roles through grants, each of which may expire; the permissions
in force are those of the roles whose grant has not expired.

Duties are split: whoever manages accounts (admin) sees no customer, whoever reads the audit
log (auditor) changes nothing, and only a marketer may see a personal number in full (after
re-authenticating, and logged).
"""
from __future__ import annotations

from collections.abc import Iterable

PERMISSIONS: dict[str, str] = {
    "campaigns.read": "list campaigns, their change history and uplift",
    "campaigns.write": "create, change and delete console campaigns",
    "models.read": "model versions, their metrics and deployments",
    "customers.read": "a customer's profile, scores, offers and responses, personal numbers masked",
    "customers.reveal": "one personal number in full, for one response, after re-authentication",
    "audit.read": "search the audit log and verify its hash chain",
    "audit.export": "export the audit log as CSV (masked)",
    "users.read": "list users, their roles, grants and lock state",
    "users.write": "create users, grant and revoke roles, unlock and disable accounts",
    "system.read": "the console's own state: its feed of the customer topics, its database",
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"users.read", "users.write", "system.read"}),
    "marketer": frozenset({"campaigns.read", "campaigns.write", "models.read", "customers.read", "customers.reveal"}),
    "analyst": frozenset({"campaigns.read", "models.read", "customers.read"}),
    "auditor": frozenset({"audit.read", "audit.export", "users.read"}),
    "sre": frozenset({"system.read", "models.read"}),
}
ROLES: tuple[str, ...] = tuple(ROLE_PERMISSIONS)

_undeclared = {permission for granted in ROLE_PERMISSIONS.values() for permission in granted} - set(PERMISSIONS)
if _undeclared:
    raise AssertionError(f"roles grant undeclared permissions: {sorted(_undeclared)}")


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    """The permissions a set of roles gives.

    >>> sorted(permissions_of(["sre", "analyst"]))
    ['campaigns.read', 'customers.read', 'models.read', 'system.read']
    """
    return frozenset().union(*(ROLE_PERMISSIONS[role] for role in roles))
