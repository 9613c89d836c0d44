"""`cipherstream console create-admin | unlock | verify-audit`: the operator console's accounts and audit log."""
from __future__ import annotations

import sys

import typer

from services.cli.output import console
from services.core.config import load_settings

app = typer.Typer(help="The operator console: the first admin, unlocking an account, verifying the audit log.")


@app.command("create-admin")
def create_admin(
    username: str = typer.Argument(..., help="the admin's username (a-z 0-9 . _ -, 3 to 64)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
) -> None:
    """Create the first admin (there is no default account). Asks for the password twice unless
    --password-stdin; the greeting and the authenticator are set at the first login."""
    from services.console.accounts import AccountError
    from services.console.admin import create_admin as create

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password (at least 12 characters)", hide_input=True, confirmation_prompt=True)
    try:
        create(load_settings(), username, password)
    except AccountError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    console.print(f"admin {username} created: log in to the console to set the greeting and the authenticator")


@app.command("unlock")
def unlock(username: str = typer.Argument(..., help="the locked user")) -> None:
    """Unlock an account locked by failed logins (recorded in the audit log)."""
    from services.console.accounts import AccountError
    from services.console.admin import unlock as lift

    try:
        lift(load_settings(), username)
    except AccountError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    console.print(f"{username} unlocked")


@app.command("verify-audit")
def verify_audit(
    head: str = typer.Option("", help="SEQ:HASH of the last entry as recorded elsewhere (the `head` of the log line "
                                      "'audit appended', or a verify's output); catches entries cut off the end"),
) -> None:
    """Check the audit log's hash chain; exit 1 naming every edited, removed or reordered entry."""
    from services.console.admin import verify_audit as verify
    from services.console.audit import parse_head

    try:
        expected = parse_head(head) if head else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--head") from error
    report = verify(load_settings(), expected)
    if report.intact:
        console.print(f"audit log intact: {report.entries} entries, head {report.head_seq}:{report.head_hash}", soft_wrap=True)
        return
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]", soft_wrap=True)
    console.print(f"audit log BROKEN: {len(report.problems)} problems in {report.entries} entries")
    raise typer.Exit(1)
