"""`cipherstream demo | up | create-topics | run`: the whole stack, its topics, one service."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from services.cli.data import GENERATED_CUSTOMERS, GENERATED_SEED
from services.cli.output import console
from services.cli.training import report_table
from services.core.config import REPO_ROOT, load_settings
from services.core.errors import CipherstreamError
from services.core.supervisor import BANK_SERVICES, PARTNER_SERVICES

if TYPE_CHECKING:
    from demo.driver import DemoSummary
    from services.bootstrap import BootstrapReport
    from services.core.config import Settings
    from services.core.supervisor import ServiceRunner

SERVICES = (*BANK_SERVICES, *PARTNER_SERVICES)


def demo(
    customers: int = typer.Option(1000, help="synthetic customers"),
    events: int = typer.Option(3000, help="customer events to replay"),
    malformed: int = typer.Option(30, help="malformed records mixed in"),
    rate: float = typer.Option(500.0, help="events per second offered"),
) -> None:
    """Start everything on embedded parts, replay events end to end, print a summary, stop everything."""
    from demo.driver import run_demo
    from services.reporting.tallies import campaign_totals

    work_dir = Path(tempfile.mkdtemp(prefix="cipherstream-demo-"))
    console.print(f"[bold]Cipherstream demo[/bold]: {customers} customers, {events} events (+{malformed} malformed) "
                  f"at {rate:.0f}/s; logs in {work_dir / 'logs'}")
    try:
        summary = run_demo(work_dir, customers=customers, events=events, malformed=malformed, rate_per_s=rate)
    except CipherstreamError as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(1) from error
    table = Table(title="What happened", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("partner's people / shared with the bank", f"{summary.partner_people} / {summary.shared_people}")
    table.add_row(f"aligned by PSI over exchange topics ({summary.alignment_s:.1f} s)", str(summary.aligned))
    table.add_row("models trained from history, bank-only and federated (s)", f"{summary.bootstrap_s:.1f}")
    if summary.bootstrap is not None:
        table.add_row("  products on the fallback (too little history)", ", ".join(summary.bootstrap.fallback_products) or "none")
    table.add_row("events in (valid)", str(summary.events_sent))
    table.add_row("scored", str(summary.scored))
    table.add_row("scored with the partner's partial scores", str(summary.scores_with_partner))
    for channel, count in sorted(summary.offers_by_channel.items()):
        table.add_row(f"offers -> offers.{channel}", str(count))
    for reason, count in sorted(summary.suppressed_by_reason.items()):
        table.add_row(f"suppressed: {reason}", str(count))
    for reason, count in sorted(summary.dead_letters_by_reason.items()):
        table.add_row(f"dead letters: {reason}", str(count))
    for outcome, count in sorted(summary.responses_by_outcome.items()):
        table.add_row(f"responses: {outcome}", str(count))
    table.add_row("latency event -> offer p50 (ms)", f"{summary.latency_ms(0.5):.1f}")
    table.add_row("latency event -> offer p99 (ms)", f"{summary.latency_ms(0.99):.1f}")
    table.add_row("model service numbers on offers", str(len(summary.service_numbers)))
    for report in summary.uplift:
        table.add_row(f"uplift {report.campaign_id} (treated {report.treated}, holdout {report.holdout})",
                      f"{report.uplift:+.3f} [{report.ci_low:+.3f}, {report.ci_high:+.3f}]" if report.treated and report.holdout
                      else "n/a")
    for campaign, totals in sorted(campaign_totals(summary.campaign_report).items()):  # reporting's faust table
        table.add_row(f"report {campaign}: offered, suppressed, converted",
                      f"{totals['offered']}, {totals['suppressed']}, {totals['response:converted']}")
    table.add_row("run time (s)", f"{summary.duration_s:.1f}")
    if summary.bootstrap is not None:
        console.print(report_table(summary.bootstrap))
    console.print(table)
    console.print(served_table(summary))
    if not summary.complete:
        console.print("[red]not every event was accounted for within the time limit[/red]")
        raise typer.Exit(1)
    console.print("[green]every event accounted for: scored and offered or suppressed; every malformed record in the DLQ[/green]")


def served_table(summary: DemoSummary) -> Table:
    """Which model versions scored the run's events, and the spread of the propensities per product."""
    import numpy as np

    table = Table(title="Models that served, and the propensities they gave", show_header=True)
    for column in ("product", "model", "algorithm", "service number", "rows learned", "holdout AUC", "scores"):
        table.add_column(column)
    for model in summary.served:
        table.add_row(model.product, model.model_version, model.algorithm, model.service_number, str(model.rows_learned),
                      "n/a" if model.holdout_auc is None else f"{model.holdout_auc:.3f}", str(model.scores))
    for product, values in sorted(summary.propensities.items()):
        low, median, high = np.quantile(values, [0.1, 0.5, 0.9])
        table.add_row(product, "propensity p10 / p50 / p90", f"{low:.4f} / {median:.4f} / {high:.4f}",
                      f"{len(set(values))} distinct values", "", "", str(len(values)))
    return table


def up(
    work_dir: Path = typer.Option(REPO_ROOT / ".cipherstream", help="where the embedded parts keep data and logs"),
    history: Path | None = typer.Option(None, help="train from this campaign-response export (CSV, docs/models.md) "
                                                   "instead of a generated one"),
    bootstrap: bool = typer.Option(True, help="train every product's models before scoring serves (else products "
                                              "without a trained version are served by the fallback)"),
) -> None:
    """Start the embedded broker and Redis plus every bank and partner service; Ctrl-C stops them all.

    Before scoring starts, every product's models are trained from the bank's history: by default
    a generated one (the same 1,000 customers `cipherstream generate` sends, whose customer rows
    and partner feed are published first so that PSI aligns them for the federated models)."""
    from services.core.kafka import create_topics
    from services.core.runtime import embedded_stack
    from services.core.supervisor import ServiceRunner
    from services.protocol.catalog import all_topic_names

    with embedded_stack(work_dir) as stack:
        os.environ.update(stack.env)
        settings = load_settings()
        asyncio.run(create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), settings.topic_partitions))
        runner = ServiceRunner(settings, work_dir / "logs")
        try:
            fallback_products: list[str] = []
            if bootstrap:
                try:
                    report = _bootstrap_then_start(settings, runner, work_dir, history)
                except CipherstreamError as error:
                    console.print(f"[red]training before serving failed:[/red] {error}")
                    raise typer.Exit(1) from error
                console.print(report_table(report))
                fallback_products = report.fallback_products
            else:
                runner.start_both_parties()
            # One JSON line, so that a script (and the suite) can read where everything is.
            print(json.dumps({"embedded_broker": stack.broker_kind, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                              "REDIS_URL": settings.redis_url.get_secret_value(),
                              # The embedded SQLite registry's; a DATABASE_URL the environment gave may hold a password.
                              "DATABASE_URL": stack.env.get("DATABASE_URL"), "services": runner.ports,
                              "trained": bootstrap, "fallback_products": fallback_products}), flush=True)
            # Blocked (after the children started, which would inherit the mask) so that sigwait
            # takes them and the finally below stops everything, broker included, in order.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            runner.stop_all()


def _bootstrap_then_start(settings: Settings, runner: ServiceRunner, work_dir: Path,
                          history_file: Path | None) -> BootstrapReport:
    """Train every product's bank-only models, start every service but scoring, align and train
    the federated models, then start scoring: it serves what was trained from its first event."""
    from demo.generator.history import campaign_contacts
    from demo.generator.population import make_population
    from demo.generator.publish import publish_population
    from demo.waiting import wait_aligned
    from services.bootstrap import history_from_file, train_bank_models_from, train_federated_models
    from services.core.supervisor import partner_env
    from services.models.history import write_history

    population = None
    if history_file is None:  # the embedded default: the customers `cipherstream generate` sends, and their past
        population = make_population(GENERATED_CUSTOMERS, GENERATED_SEED)
        history_file = work_dir / "history" / "campaign-responses.csv"
        write_history(history_file, campaign_contacts(population))
    history = history_from_file(history_file)
    report = train_bank_models_from(settings, history)
    for name in BANK_SERVICES:
        if name != "scoring":
            runner.start(name, wait=False)
    for name in PARTNER_SERVICES:
        runner.start(name, extra_env=partner_env(settings), wait=False)
    runner.wait_all_ready()

    async def align_and_train() -> None:
        if population is not None:
            published = await publish_population(settings, population)
            await wait_aligned(settings, published.shared_people)
        await train_federated_models(settings, history, report)

    asyncio.run(align_and_train())
    runner.start("scoring")
    return report


def create_topics_command(
    owner: list[str] = typer.Option(["bank", "partner", "exchange"], help="whose topics: bank, partner, exchange"),
) -> None:
    """Create the topics of the given owners on KAFKA_BOOTSTRAP_SERVERS (exchange ones on the exchange cluster)."""
    from services.core.kafka import create_topics
    from services.protocol.catalog import all_topic_names

    settings = load_settings()
    own = [name for name in owner if name != "exchange"]
    asyncio.run(create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings, own), settings.topic_partitions))
    if "exchange" in owner:
        asyncio.run(create_topics(settings.exchange_servers, all_topic_names(settings, ["exchange"]),
                                  settings.topic_partitions))
    console.print(f"topics of {', '.join(owner)} exist")


def run(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (same as `python -m services.<service>.app worker`)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}")
    os.execv(sys.executable, [sys.executable, "-m", f"services.{service}.app", "worker"])  # nosec B606  # this interpreter; a name of SERVICES
