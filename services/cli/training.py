"""`cipherstream train-federated`: a federated model (LR or SecureBoost) trained with the partner over the exchange topics."""
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
    algorithm: str = typer.Option("lr", help="lr (logistic regression) or sbt (SecureBoost)"),
    trees: int = typer.Option(30, help="sbt: trees"), depth: int = typer.Option(3, help="sbt: depth"),
    bins: int = typer.Option(32, help="sbt: bins per column"), min_child_weight: float = typer.Option(1.0),
    l2: float = typer.Option(1.0, help="sbt: lambda"), loss: str = typer.Option("log_loss", help="sbt: log_loss or exponential"),
) -> None:
    """Train a federated model with the partner over the exchange topics (the partner service must run)."""
    from services.exchange import admin
    from services.models.secureboost import BoostingParameters

    if algorithm not in ("lr", "sbt"):
        console.print(f"[red]--algorithm is lr or sbt, not {algorithm!r}[/red]")
        raise typer.Exit(2)

    settings = load_settings()
    try:
        labelled = admin.read_history(history)
    except (OSError, ValueError, KeyError, TypeError) as error:
        console.print(f"[red]cannot read {history}:[/red] {error!r}")
        raise typer.Exit(2) from error
    try:
        # A plain string option, as typer shows it; the training job reads any value but batch and online as minibatch.
        if algorithm == "sbt":
            parameters = BoostingParameters(trees=trees, depth=depth, learning_rate=learning_rate or 0.3, bins=bins,
                                            min_child_weight=min_child_weight, l2=l2, loss=loss)
            result = asyncio.run(admin.train_secureboost(settings, product, labelled, parameters))
        else:
            chosen = {name: value for name, value in (("epochs", epochs), ("batch_size", batch_size),
                                                      ("learning_rate", learning_rate)) if value is not None}
            result = asyncio.run(admin.train_federated(settings, product, labelled, mode=cast("Mode", mode), **chosen))
    except CipherstreamError as error:
        console.print(f"[red]training failed:[/red] {error}")
        raise typer.Exit(1) from error
    console.print({"service_number": result.version.service_number, "rows": result.rows,
                   "positives": result.positives, "epochs": result.epochs, "converged": result.converged,
                   "seconds": round(result.seconds, 1), "losses": result.losses})
