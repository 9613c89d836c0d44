"""`cipherstream suppress add | remove | list`: the suppression list dispatch checks before every offer."""
from __future__ import annotations

import asyncio

import typer

from services.cli.output import console
from services.core.config import load_settings

app = typer.Typer(help="The suppression list: customers never to contact (for one campaign or all).")


@app.command("add")
def suppress_add(customer_id: str, campaign: str = typer.Option("*", help="a campaign id, or * for every campaign")) -> None:
    """Never contact this customer (for the campaign, or at all) from the next decision on."""
    from services.dispatch.admin import suppress

    asyncio.run(suppress(load_settings(), customer_id, campaign))
    console.print(f"{customer_id} suppressed for {campaign}")


@app.command("remove")
def suppress_remove(customer_id: str, campaign: str = typer.Option("*")) -> None:
    from services.dispatch.admin import unsuppress

    asyncio.run(unsuppress(load_settings(), customer_id, campaign))
    console.print(f"{customer_id} no longer suppressed for {campaign}")


@app.command("list")
def suppress_list(customer_id: str) -> None:
    from services.dispatch.admin import suppressions_of

    console.print(sorted(asyncio.run(suppressions_of(load_settings(), customer_id))))
