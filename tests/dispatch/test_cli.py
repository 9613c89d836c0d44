"""`cipherstream suppress` and `cipherstream uplift` against the real Redis."""
from __future__ import annotations

from typer.testing import CliRunner

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
