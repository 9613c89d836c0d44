"""`cipherstream`: one entry point for the embedded stack, any service, the generator and the demo."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from services.core.config import REPO_ROOT, load_settings
from services.core.errors import CipherstreamError
from services.core.supervisor import BANK_SERVICES, PARTNER_SERVICES

app = typer.Typer(help="Cipherstream: privacy-preserving real-time marketing on Kafka.", no_args_is_help=True)
schemas_app = typer.Typer(help="Schema versions.")
app.add_typer(schemas_app, name="schemas")
suppress_app = typer.Typer(help="The suppression list: customers never to contact (for one campaign or all).")
app.add_typer(suppress_app, name="suppress")
campaigns_app = typer.Typer(help="Campaigns: the file's and the console's, as dispatch runs them.")
app.add_typer(campaigns_app, name="campaigns")
console = Console()
SERVICES = (*BANK_SERVICES, *PARTNER_SERVICES)


@app.command()
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
    table.add_row(f"federated model {summary.federated_product}: rows, encrypted training (s)",
                  f"{summary.federated_rows}, {summary.federated_s:.1f}")
    table.add_row("  its service number", summary.federated_service_number)
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
    console.print(table)
    if not summary.complete:
        console.print("[red]not every event was accounted for within the time limit[/red]")
        raise typer.Exit(1)
    console.print("[green]every event accounted for: scored and offered or suppressed; every malformed record in the DLQ[/green]")


@app.command()
def up(
    work_dir: Path = typer.Option(REPO_ROOT / ".cipherstream", help="where the embedded parts keep data and logs"),
) -> None:
    """Start the embedded broker and Redis plus every bank and partner service; Ctrl-C stops them all."""
    from services.core.kafka import all_topic_names, create_topics
    from services.core.runtime import embedded_stack
    from services.core.supervisor import ServiceRunner

    with embedded_stack(work_dir) as stack:
        os.environ.update(stack.env)
        settings = load_settings()
        asyncio.run(create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), settings.topic_partitions))
        runner = ServiceRunner(settings, work_dir / "logs")
        try:
            runner.start_both_parties()
            # One JSON line, so that a script (and the suite) can read where everything is.
            print(json.dumps({"embedded_broker": stack.broker_kind, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                              "REDIS_URL": settings.redis_url.get_secret_value(), "services": runner.ports}), flush=True)
            # Blocked (after the children started, which would inherit the mask) so that sigwait
            # takes them and the finally below stops everything, broker included, in order.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            runner.stop_all()


@app.command("create-topics")
def create_topics_command(
    owner: list[str] = typer.Option(["bank", "partner", "exchange"], help="whose topics: bank, partner, exchange"),
) -> None:
    """Create the topics of the given owners on KAFKA_BOOTSTRAP_SERVERS (exchange ones on the exchange cluster)."""
    from services.core.kafka import all_topic_names, create_topics

    settings = load_settings()
    own = [name for name in owner if name != "exchange"]
    asyncio.run(create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings, own), settings.topic_partitions))
    if "exchange" in owner:
        asyncio.run(create_topics(settings.exchange_servers, all_topic_names(settings, ["exchange"]),
                                  settings.topic_partitions))
    console.print(f"topics of {', '.join(owner)} exist")


@app.command()
def run(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (same as `python -m services.<service>.app worker`)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}")
    os.execv(sys.executable, [sys.executable, "-m", f"services.{service}.app", "worker"])


@app.command()
def generate(
    customers: int = typer.Option(1000), events: int = typer.Option(3000), seed: int = typer.Option(7),
) -> None:
    """Publish synthetic customers and events to bank.events.raw on KAFKA_BOOTSTRAP_SERVERS."""
    from services.core.clients import produce
    from demo.generator.partner_feed import partner_records
    from demo.generator.population import customer_records, event_records, make_population

    settings = load_settings()
    population = make_population(customers, seed)
    topic = settings.topic("bank.events.raw")
    now_ms = int(time.time() * 1000)
    sent = asyncio.run(produce(settings.kafka_bootstrap_servers, topic, customer_records(population, now_ms)))
    sent += asyncio.run(produce(settings.kafka_bootstrap_servers, topic, event_records(population, events, seed + 1)))
    partner_topic = settings.topic("partner.features.raw")
    partner_sent = asyncio.run(produce(settings.kafka_bootstrap_servers, partner_topic, partner_records(population)))
    console.print(f"published {sent} records to {topic} and {partner_sent} to {partner_topic}")


@app.command()
def backup(to: Path = typer.Option(..., "--to", help="folder to write the backup into")) -> None:
    """Back up Redis keys under the prefix and every SQL table (REDIS_URL, DATABASE_URL)."""
    from services.core.backup import backup as take_backup

    summary, seconds = asyncio.run(_with_redis(lambda redis, settings: take_backup(
        redis, settings.redis_key_prefix, settings.database_url.get_secret_value(), to)))
    console.print(f"backed up {summary.redis_keys} Redis keys and {summary.sql_rows} SQL rows to {to} in {seconds:.2f} s")


@app.command()
def restore(from_: Path = typer.Option(..., "--from", help="folder of a backup")) -> None:
    """Restore a backup: Redis keys (with their TTLs) and SQL rows; refuses a damaged backup."""
    from services.core.backup import restore as restore_backup
    from services.core.sql import full_metadata

    summary, seconds = asyncio.run(_with_redis(lambda redis, settings: restore_backup(
        redis, settings.database_url.get_secret_value(), from_, full_metadata())))
    console.print(f"restored {summary.redis_keys} Redis keys and {summary.sql_rows} SQL rows in {seconds:.2f} s")


async def _with_redis(action):  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    settings = load_settings()
    client = aioredis.from_url(settings.redis_url.get_secret_value())
    started = time.perf_counter()
    try:
        return await action(client, settings), time.perf_counter() - started
    finally:
        await client.aclose()


@app.command("train-federated")
def train_federated(
    product: str = typer.Option(..., help="the product the model scores"),
    history: Path = typer.Option(..., help="JSON lines: {customer_id, features: {name: value}, label: 0|1}"),
    epochs: int = typer.Option(3), batch_size: int = typer.Option(256), mode: str = typer.Option("minibatch"),
    learning_rate: float = typer.Option(0.15),
) -> None:
    """Train a federated model with the partner over the exchange topics (the partner service must run)."""
    import json

    import numpy as np
    import redis.asyncio as aioredis

    from services.exchange.training import LabelledRow, train_federated_over_exchange
    from services.models.registry import ModelRegistry
    from services.scoring.features import FEATURE_NAMES

    settings = load_settings()
    try:
        rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        labelled = [LabelledRow(row["customer_id"], np.array([float(row["features"][name]) for name in FEATURE_NAMES]),
                                int(row["label"])) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        console.print(f"[red]cannot read {history}:[/red] {error!r}")
        raise typer.Exit(2) from error

    async def train() -> None:
        redis = aioredis.from_url(settings.redis_url.get_secret_value())
        try:
            result = await train_federated_over_exchange(
                settings, redis, ModelRegistry(settings.database_url.get_secret_value()), product, labelled,
                mode=mode, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)  # type: ignore[arg-type]
        finally:
            await redis.aclose()
        console.print({"service_number": result.version.service_number, "rows": result.rows,
                       "positives": result.positives, "seconds": round(result.seconds, 1), "losses": result.losses})

    try:
        asyncio.run(train())
    except CipherstreamError as error:
        console.print(f"[red]training failed:[/red] {error}")
        raise typer.Exit(1) from error


def _policy():  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    from services.dispatch.app import caps
    from services.dispatch.campaigns import load_campaign_file
    from services.dispatch.contact_policy import ContactPolicy

    settings = load_settings()
    rules = load_campaign_file(settings.campaigns_file).contact_rules
    return ContactPolicy(aioredis.from_url(settings.redis_url.get_secret_value()), settings.redis_key_prefix, caps(rules))


@suppress_app.command("add")
def suppress_add(customer_id: str, campaign: str = typer.Option("*", help="a campaign id, or * for every campaign")) -> None:
    """Never contact this customer (for the campaign, or at all) from the next decision on."""
    asyncio.run(_policy().suppress(customer_id, campaign))
    console.print(f"{customer_id} suppressed for {campaign}")


@suppress_app.command("remove")
def suppress_remove(customer_id: str, campaign: str = typer.Option("*")) -> None:
    asyncio.run(_policy().unsuppress(customer_id, campaign))
    console.print(f"{customer_id} no longer suppressed for {campaign}")


@suppress_app.command("list")
def suppress_list(customer_id: str) -> None:
    console.print(sorted(asyncio.run(_policy().suppressions_of(customer_id))))


@app.command("uplift")
def uplift_report() -> None:
    """Per campaign: treated and holdout sizes, response rates, uplift with its 95% interval."""
    import redis.asyncio as aioredis

    from services.dispatch.uplift import uplift

    settings = load_settings()
    live = _live_campaigns(settings)

    async def reports() -> list:  # type: ignore[type-arg]
        redis = aioredis.from_url(settings.redis_url.get_secret_value())
        try:
            return [await uplift(redis, settings.redis_key_prefix, campaign.campaign_id) for campaign in live.campaigns]
        finally:
            await redis.aclose()

    table = Table(title="Uplift per campaign (treated - holdout response rate, 95% CI)")
    for column in ("campaign", "treated", "converted", "holdout", "converted", "uplift", "95% CI"):
        table.add_column(column)
    for report in asyncio.run(reports()):
        measured = report.treated and report.holdout
        table.add_row(report.campaign_id, str(report.treated), str(report.treated_converted), str(report.holdout),
                      str(report.holdout_converted), f"{report.uplift:+.4f}" if measured else "n/a",
                      f"[{report.ci_low:+.4f}, {report.ci_high:+.4f}]" if measured else "no data yet")
    console.print(table)


def _live_campaigns(settings):  # type: ignore[no-untyped-def]
    from services.dispatch.campaign_catalog import CampaignCatalog
    from services.dispatch.campaign_store import CampaignStore

    return CampaignCatalog(settings.campaigns_file, CampaignStore(settings.database_url.get_secret_value())).live


@campaigns_app.command("check")
def campaigns_check(path: Path = typer.Argument(..., help="a campaigns YAML file")) -> None:
    """Validate a campaigns file as dispatch would load it; exit 2 naming every bad field."""
    from services.dispatch.campaigns import load_campaign_file

    try:
        loaded = load_campaign_file(path)
    except CipherstreamError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    console.print(f"{path}: {len(loaded.campaigns)} campaigns, valid")


@campaigns_app.command("list")
def campaigns_list() -> None:
    """The live campaigns (CIPHERSTREAM_CAMPAIGNS_FILE plus the console's, in DATABASE_URL)."""
    live = _live_campaigns(load_settings())
    table = Table(title=f"Live campaigns (console revision {live.version[1]})")
    for column in ("campaign", "source", "product", "value", "priority", "triggers", "channels", "holdout"):
        table.add_column(column)
    for campaign in live.campaigns:
        table.add_row(campaign.campaign_id, "file" if campaign.campaign_id in live.file_ids else "console",
                      campaign.product, f"{campaign.value:g}", f"{campaign.priority:g}", ", ".join(campaign.triggers),
                      ", ".join(c.channel for c in campaign.channels), f"{campaign.holdout_share:.0%}")
    console.print(table)


@schemas_app.command("release")
def schemas_release() -> None:
    """Release every new or changed schema as its next version, refusing backward-incompatible changes."""
    from services.core.schema_release import release_changed_schemas

    try:
        released = release_changed_schemas(REPO_ROOT / "schemas")
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print(released or "no schema changed")


if __name__ == "__main__":
    app()
