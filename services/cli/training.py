"""`cipherstream train`: every product's models trained from the bank's history (services/bootstrap.py);
`cipherstream train-federated`: one federated model (LR or SecureBoost) trained with the partner over the exchange topics."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.table import Table

from services.cli.output import console
from services.core.config import load_settings
from services.core.errors import CipherstreamError

if TYPE_CHECKING:
    from services.bootstrap import BootstrapReport
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


def train(
    history: Path | None = typer.Option(None, help="a campaign-response export, CSV (docs/models.md)"),
    from_responses: bool = typer.Option(False, "--from-responses",
                                        help="replay the responses topic with the features scoring stored instead"),
    federated: bool = typer.Option(True, help="also train the federated models with the partner (needs the exchange "
                                              "and partner services and the customers aligned)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Train every product's models from the bank's history before scoring serves them (start or
    restart scoring afterwards: it loads the bank-only models at start)."""
    from services import bootstrap
    from services.models.history import HistoryError

    if (history is None) == (not from_responses):
        console.print("[red]give exactly one of --history FILE and --from-responses[/red]")
        raise typer.Exit(2)
    settings = load_settings()
    try:
        source = bootstrap.history_from_file(history) if history else asyncio.run(bootstrap.history_from_responses(settings))
    except HistoryError as error:
        console.print(f"[red]cannot read the history:[/red] {error}")
        raise typer.Exit(2) from error
    except CipherstreamError as error:
        console.print(f"[red]cannot replay the responses:[/red] {error}")
        raise typer.Exit(1) from error
    report = bootstrap.train_bank_models_from(settings, source)
    if federated:
        try:
            asyncio.run(bootstrap.train_federated_models(settings, source, report))
        except CipherstreamError as error:
            console.print(f"[red]federated training failed:[/red] {error}")
            raise typer.Exit(1) from error
    if as_json:
        print(json.dumps(report_json(report)))
    else:
        console.print(report_table(report))
        for note in report.notes:
            console.print(f"[yellow]{note}[/yellow]")


def report_json(report: BootstrapReport) -> dict[str, object]:
    """The bootstrap report as plain values, for scripts (and the suite)."""
    federated = {entry.product: entry for entry in report.federated}
    products: dict[str, object] = {}
    for bank in report.bank:
        entry: dict[str, object] = {
            "bank": {"service_number": bank.version.service_number if bank.version else None,
                     "version": bank.version.version if bank.version else None, "rows": bank.rows,
                     "positives": bank.positives, "holdout_rows": bank.holdout_rows, "auc_holdout": bank.holdout_auc,
                     "fallback_reason": bank.fallback_reason}}
        if bank.product in federated:
            fed = federated[bank.product]
            entry["federated"] = {"service_number": fed.version.service_number if fed.version else None,
                                  "rows": fed.rows, "positives": fed.positives, "holdout_rows": fed.holdout_rows,
                                  "auc_holdout": fed.holdout_auc, "auc_holdout_bank_only": fed.bank_only_holdout_auc,
                                  "seconds": round(fed.seconds, 1), "skipped_reason": fed.skipped_reason}
        products[bank.product] = entry
    return {"source": report.source, "history_rows": report.history_rows, "notes": report.notes,
            "fallback_products": report.fallback_products, "products": products}


def report_table(report: BootstrapReport) -> Table:
    """One row per product: the bank-only model trained (or the fallback and why), the federated one."""
    table = Table(title=f"Models trained from {report.source} ({report.history_rows} history rows)", show_header=True)
    for column in ("product", "bank-only model", "rows / converted", "holdout AUC", "federated model",
                   "aligned customers", "holdout AUC (bank-only on the same contacts)"):
        table.add_column(column)
    federated = {entry.product: entry for entry in report.federated}
    for bank in report.bank:
        fed = federated.get(bank.product)
        bank_model = bank.version.service_number if bank.version else f"FALLBACK: {bank.fallback_reason}"
        if fed is None:
            fed_cells = ["not run", "", ""]
        elif fed.version is None:
            fed_cells = [f"none: {fed.skipped_reason}", "", ""]
        else:
            fed_cells = [fed.version.service_number, str(fed.rows),
                         f"{_auc(fed.holdout_auc)} ({_auc(fed.bank_only_holdout_auc)})"]
        table.add_row(bank.product, bank_model, f"{bank.rows} / {bank.positives}", _auc(bank.holdout_auc), *fed_cells)
    return table


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
