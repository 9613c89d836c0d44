"""`cipherstream`: one entry point for the embedded stack, any service, the generator and the demo.

One module per command group; a command parses its arguments, calls the package that owns the
work and prints what came back:

    stack.py      demo, up, create-topics, run   demo/driver.py, core/runtime.py, core/supervisor.py
    data.py       generate, backup, restore      demo/generator/publish.py, core/backup.py
    training.py   train-federated                exchange/admin.py
    campaigns.py  uplift, campaigns check|list   dispatch/admin.py, campaigns/definitions.py
    suppress.py   suppress add|remove|list       dispatch/admin.py
    schemas.py    schemas release                core/schema_release.py
    console.py    console create-admin|unlock|verify-audit   console/admin.py

Heavy modules are imported inside the commands, so that `cipherstream --help` starts quickly.
"""
from __future__ import annotations

import typer

from services.cli import campaigns, console, data, schemas, stack, suppress, training

app = typer.Typer(help="Cipherstream: privacy-preserving real-time marketing on Kafka.", no_args_is_help=True)
# In the order `cipherstream --help` lists them.
app.command()(stack.demo)
app.command()(stack.up)
app.command("create-topics")(stack.create_topics_command)
app.command()(stack.run)
app.command()(data.generate)
app.command()(data.backup)
app.command()(data.restore)
app.command("train-federated")(training.train_federated)
app.command("uplift")(campaigns.uplift)
app.add_typer(schemas.app, name="schemas")
app.add_typer(suppress.app, name="suppress")
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(console.app, name="console")
