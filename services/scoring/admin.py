"""What the command line asks of scoring: the customer style types it serves now."""
from __future__ import annotations

from services.core.config import Settings
from services.models.registry import ModelRegistry, ModelVersion
from services.models.segmenter import STYLE_MODEL_NAME, StyleType


def style_types(settings: Settings) -> tuple[ModelVersion | None, list[StyleType]]:
    """The latest `style_types` version in the registry and the types it records (none before the
    segmenter's first checkpoint)."""
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        latest = registry.latest(STYLE_MODEL_NAME)
    finally:
        registry.close()
    if latest is None:
        return None, []
    return latest[0], [StyleType(**recorded) for recorded in latest[0].parameters.get("style_types", [])]
