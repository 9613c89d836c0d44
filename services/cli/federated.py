"""`cipherstream federated evaluate`: what a new partner's data adds, measured on exported files before a project.

Both halves in FATE's CSV layout (guest `id,y,x0..`, host `id,x0..`), aligned by PSI and trained by
the real protocol with both parties in this process (services/models/evaluation.py); prints the test
AUC and KS of the federated model beside central LR on the same prepared rows and the bank's features
alone. Bad input exits 2 naming the file, row and column.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from services.cli.output import console
from services.core.errors import CipherstreamError, ConfigError, ValidationError

app = typer.Typer(help="Federated models on exported data.")


@app.command("evaluate")
def evaluate(
    guest: Path = typer.Option(..., help="the bank's half: id,y,x0,... (y is 0 or 1; an empty cell is a missing value)"),
    host: Path = typer.Option(..., help="the partner's half: id,x0,..."),
    model: str = typer.Option("lr", help="the model to train by its protocol: lr (federated logistic regression)"),
    test_fraction: float | None = typer.Option(None, help="share of the aligned rows held out for testing (default 0.3)"),
    seed: int | None = typer.Option(None, help="the split's and the batches' seed (default 0)"),
    max_epochs: int | None = typer.Option(None, help="epoch cap; training stops earlier once the loss settles (default 60)"),
    key_bits: int | None = typer.Option(None, help="Paillier key size (default 2048)"),
    plaintext: bool = typer.Option(False, "--plaintext",
                                   help="the same protocol and bytes without encryption: a quick first look, not the real cost"),
    workers: int | None = typer.Option(None, help="processes per party for Paillier (default: one per core)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object, for scripts"),
) -> None:
    """Align two exported halves by PSI, train federated, and compare with central and bank-only LR on the test rows."""
    from services.core.avro import AvroCodec, SchemaStore
    from services.core.config import REPO_ROOT
    from services.models.datasets import read_guest, read_host
    from services.models.evaluation import EvaluationSettings
    from services.models.evaluation import evaluate as run_evaluation
    from services.models.fedlr import BatchTooSmallError

    chosen = {name: value for name, value in (("test_fraction", test_fraction), ("seed", seed),
                                              ("max_epochs", max_epochs), ("key_bits", key_bits)) if value is not None}
    try:
        settings = EvaluationSettings(encrypted=not plaintext, workers=workers, **chosen)  # type: ignore[arg-type]
        result = run_evaluation(read_guest(guest), read_host(host), settings,
                                AvroCodec(SchemaStore(REPO_ROOT / "schemas")), model=model)
    except (ValidationError, ConfigError, BatchTooSmallError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    except CipherstreamError as error:
        console.print(f"[red]evaluation failed:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from error
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    _print(result.to_dict())


def _print(result: dict[str, Any]) -> None:
    rows, training = result["rows"], result["training"]
    table = Table(title=f"{result['model']} on the test rows ({rows['test']} of {rows['aligned']} aligned)")
    for column in ("model", "AUC", "KS"):
        table.add_column(column)
    for name, key in (("federated (both parties, by the protocol)", "federated"),
                      ("central LR, same prepared rows (the ceiling)", "central"),
                      ("bank's features alone", "bank_only")):
        table.add_row(name, f"{result[key]['auc']:.4f}", f"{result[key]['ks']:.4f}")
    console.print(table)
    lift = result["federated"]["auc"] - result["bank_only"]["auc"]
    console.print(f"the partner adds {lift:+.4f} AUC; federated is {result['federated']['auc'] - result['central']['auc']:+.4f}"
                  " from central")
    console.print(f"rows: {rows['guest']} guest, {rows['host']} host, {rows['aligned']} aligned by PSI; "
                  f"{rows['train']} train ({rows['train_positives']} positive), {rows['test']} test "
                  f"({rows['test_positives']} positive)")
    encryption = f"Paillier {training['key_bits']}" if training.get("encrypted") else "plaintext protocol"
    seconds = result["seconds"]
    console.print(f"training: {training.get('epochs')} epochs ({'converged' if training.get('converged') else 'epoch cap'}), "
                  f"{encryption}; seconds: PSI {seconds['psi']}, training {seconds['training']}, total {seconds['total']}; "
                  f"MB crossed: {sum(result['bytes'].values()) / 1e6:.1f}")
