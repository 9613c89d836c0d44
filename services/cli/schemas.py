"""`cipherstream schemas release`: a changed .avsc in schemas/ becomes its next version, if backward compatible."""
from __future__ import annotations

import typer

from services.cli.output import console
from services.core.config import REPO_ROOT

app = typer.Typer(help="Schema versions.")


@app.command("release")
def schemas_release() -> None:
    """Release every new or changed schema as its next version, refusing backward-incompatible changes."""
    from services.core.schema_release import release_changed_schemas

    try:
        released = release_changed_schemas(REPO_ROOT / "schemas")
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print(released or "no schema changed")
