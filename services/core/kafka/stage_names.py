"""How a service's consumer group is named (its transactional ids derive from it)."""
from __future__ import annotations

from services.core.config import Settings


def stage_group_id(settings: Settings, service: str) -> str:
    """The consumer group of a service's stages (all its workers share it)."""
    return f"cipherstream.{settings.topic_prefix}{service}"
