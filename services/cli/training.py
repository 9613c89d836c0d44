"""`cipherstream train-federated`: a federated model trained with the partner over the exchange topics."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from services.cli.output import console
from services.core.config import load_settings
from services.core.errors import CipherstreamError

if TYPE_CHECKING:
    from services.models.fedlr import Mode


def train_federated(
    product: str = typer.Option(..., help="the product the model scores"),
    history: Path = typer.Option(..., help="JSON lines: {customer_id, features: {name: value}, label: 0|1}"),
    epochs: int | None = typer.Option(None, help="at most this many epochs (default 60): training stops once the loss settles"),
    batch_size: int | None = typer.Option(None, help="rows per step (default: rows / 8, within 64 to 256)"),
    mode: str = typer.Option("minibatch"),
    learning_rate: float | None = typer.Option(None, help="the first step (default 2.0), decaying as 1 / (1 + epoch)"),
) -> None:
    """Train a federated model with the partner over the exchange topics (the partner service must run)."""
    from services.exchange import admin

    settings = load_settings()
    try:
        labelled = admin.read_history(history)
    except (OSError, ValueError, KeyError, TypeError) as error:
        console.print(f"[red]cannot read {history}:[/red] {error!r}")
        raise typer.Exit(2) from error
    try:
        # A plain string option, as typer shows it; the training job reads any value but batch and online as minibatch.
        chosen = {name: value for name, value in (("epochs", epochs), ("batch_size", batch_size),
                                                  ("learning_rate", learning_rate)) if value is not None}
        result = asyncio.run(admin.train_federated(settings, product, labelled, mode=cast("Mode", mode), **chosen))
    except CipherstreamError as error:
        console.print(f"[red]training failed:[/red] {error}")
        raise typer.Exit(1) from error
    console.print({"service_number": result.version.service_number, "rows": result.rows,
                   "positives": result.positives, "epochs": result.epochs, "converged": result.converged,
                   "seconds": round(result.seconds, 1), "losses": result.losses})
