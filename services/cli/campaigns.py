"""`cipherstream campaigns check | list` and `cipherstream uplift`: campaigns as dispatch runs them."""
from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.table import Table

from services.cli.output import console
from services.core.config import load_settings
from services.core.errors import CipherstreamError

app = typer.Typer(help="Campaigns: the file's and the console's, as dispatch runs them.")


def uplift() -> None:
    """Per campaign: treated and holdout sizes, response rates, uplift with its 95% interval."""
    from services.dispatch.admin import live_campaigns, uplift_reports

    settings = load_settings()
    reports = asyncio.run(uplift_reports(settings, live_campaigns(settings).campaigns))
    table = Table(title="Uplift per campaign (treated - holdout response rate, 95% CI)")
    for column in ("campaign", "treated", "converted", "holdout", "converted", "uplift", "95% CI"):
        table.add_column(column)
    for report in reports:
        measured = report.treated and report.holdout
        table.add_row(report.campaign_id, str(report.treated), str(report.treated_converted), str(report.holdout),
                      str(report.holdout_converted), f"{report.uplift:+.4f}" if measured else "n/a",
                      f"[{report.ci_low:+.4f}, {report.ci_high:+.4f}]" if measured else "no data yet")
    console.print(table)


@app.command("check")
def campaigns_check(path: Path = typer.Argument(..., help="a campaigns YAML file")) -> None:
    """Validate a campaigns file as dispatch would load it; exit 2 naming every bad field."""
    from services.campaigns.definitions import load_campaign_file

    try:
        loaded = load_campaign_file(path)
    except CipherstreamError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    console.print(f"{path}: {len(loaded.campaigns)} campaigns, valid")


@app.command("list")
def campaigns_list() -> None:
    """The live campaigns (CIPHERSTREAM_CAMPAIGNS_FILE plus the console's, in DATABASE_URL)."""
    from services.dispatch.admin import live_campaigns

    live = live_campaigns(load_settings())
    table = Table(title=f"Live campaigns (console revision {live.version[1]})")
    for column in ("campaign", "source", "product", "value", "priority", "triggers", "channels", "holdout"):
        table.add_column(column)
    for campaign in live.campaigns:
        table.add_row(campaign.campaign_id, "file" if campaign.campaign_id in live.file_ids else "console",
                      campaign.product, f"{campaign.value:g}", f"{campaign.priority:g}", ", ".join(campaign.triggers),
                      ", ".join(c.channel for c in campaign.channels), f"{campaign.holdout_share:.0%}")
    console.print(table)
