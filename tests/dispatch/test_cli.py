"""`cipherstream suppress`, `uplift` and `campaigns` against the real Redis and SQL database."""
from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from services.campaigns.definitions import Campaign
from services.campaigns.store import CampaignStore
from services.cli import app
from services.core.config import Settings
from services.core.supervisor import settings_env


def test_suppression_list_commands_and_uplift_report(settings: Settings) -> None:
    runner = CliRunner()
    env = settings_env(settings) | {"COLUMNS": "200"}
    added = runner.invoke(app, ["suppress", "add", "C42", "--campaign", "credit_card_upgrade"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["suppress", "list", "C42"], env=env)
    assert "credit_card_upgrade" in listed.output
    runner.invoke(app, ["suppress", "remove", "C42", "--campaign", "credit_card_upgrade"], env=env)
    assert "credit_card_upgrade" not in runner.invoke(app, ["suppress", "list", "C42"], env=env).output
    report = runner.invoke(app, ["uplift"], env=env)
    assert report.exit_code == 0 and "salary_day_wealth_fund" in report.output


def test_campaigns_check_names_bad_fields_and_list_shows_both_sources(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    env = settings_env(settings) | {"COLUMNS": "250"}
    good = runner.invoke(app, ["campaigns", "check", str(settings.campaigns_file)], env=env)
    assert good.exit_code == 0 and "valid" in good.output
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("campaigns:\n  - {campaign_id: x1, product: p, value: -5, triggers: [app_login],"
                        " channels: [{channel: pigeon, template: t}]}\n")
    bad = runner.invoke(app, ["campaigns", "check", str(bad_file)], env=env)
    assert bad.exit_code == 2 and "campaigns.0.value" in bad.output and "pigeon" in bad.output, bad.output
    store = CampaignStore(settings.database_url.get_secret_value())
    store.put(Campaign.model_validate({"campaign_id": "console_made", "product": "credit_card", "value": 10,
                                       "triggers": ["app_login"], "channels": [{"channel": "sms", "template": "t"}]}),
              actor="alice")
    store.close()
    listed = runner.invoke(app, ["campaigns", "list"], env=env)
    assert listed.exit_code == 0 and "console_made" in listed.output and "salary_day_wealth_fund" in listed.output
