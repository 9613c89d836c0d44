"""`cipherstream styles list`: the customer style types scoring serves now, what campaigns name by id."""
from __future__ import annotations

import typer
from rich.table import Table

from services.cli.output import console
from services.core.config import load_settings

app = typer.Typer(help="Customer style types: what each id campaigns name stands for now.")


@app.command("list")
def styles_list() -> None:
    """The style types of the latest segmenter version (DATABASE_URL): id, name, share, what sets it apart."""
    from services.scoring.admin import style_types

    version, types = style_types(load_settings())
    if version is None:
        console.print("no style types yet: scoring has not checkpointed its segmenter")
        return
    table = Table(title=f"Style types ({version.service_number}, {version.rows_learned} customer updates learned)")
    for column in ("id", "name", "share", "what sets it apart (all customers in brackets)"):
        table.add_column(column)
    for style in sorted(types, key=lambda style: (-style.share, style.style_id)):
        table.add_row(str(style.style_id), style.name, f"{style.share:.0%}", style.description)
    console.print(table)
