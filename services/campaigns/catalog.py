"""The live campaigns: the campaigns file (reviewed, versioned with the release) plus the console's
campaigns in SQL, reloaded while dispatch runs.

A campaign id belongs to one place: the file's ids cannot be changed through the console (the API
answers 409), so a release never silently overrides a marketer's edit or the other way round.
A change to either source is picked up within `campaign_refresh_s`; a file edited into an invalid
state is refused and the last good campaigns stay live (logged and counted).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from services.campaigns.definitions import Campaign, CampaignFile, load_campaign_file
from services.campaigns.store import CampaignStore
from services.core import metrics
from services.core.errors import ConfigError
from services.core.logs import facts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveCampaigns:
    campaign_file: CampaignFile
    console: tuple[Campaign, ...]
    version: tuple[int, int]  # (file mtime in ns, store revision)

    # Derived once per reload: the API reads them per request, dispatch per reload.
    @functools.cached_property
    def campaigns(self) -> tuple[Campaign, ...]:
        return self.campaign_file.campaigns + self.console

    @functools.cached_property
    def file_ids(self) -> frozenset[str]:
        return frozenset(campaign.campaign_id for campaign in self.campaign_file.campaigns)


class CampaignCatalog:
    def __init__(self, path: Path, store: CampaignStore) -> None:
        self.path = path
        self.store = store
        self.live = self._load(self._version())  # a bad file at start stops the service (ConfigError)

    def _version(self) -> tuple[int, int]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as exc:
            raise ConfigError(f"cannot read campaigns file {self.path}: {exc}") from exc
        return mtime, self.store.revision()

    def _load(self, version: tuple[int, int]) -> LiveCampaigns:
        campaign_file = load_campaign_file(self.path)
        file_ids = {campaign.campaign_id for campaign in campaign_file.campaigns}
        console = tuple(campaign for campaign in self.store.all() if campaign.campaign_id not in file_ids)
        return LiveCampaigns(campaign_file, console, version)

    def refresh(self) -> bool:
        """Reload if either source changed; True when the live campaigns were replaced."""
        try:
            version = self._version()
            if version == self.live.version:
                return False
            self.live = self._load(version)
        except ConfigError as error:
            metrics.CAMPAIGN_RELOAD_ERRORS.inc()
            log.error("campaigns not reloaded; the last good ones stay live", extra=facts(error=str(error)))
            return False
        log.info("campaigns reloaded", extra=facts(campaigns=len(self.live.campaigns), revision=version[1]))
        return True
