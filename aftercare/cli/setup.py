"""`init` and `check`: the database schema, and whether the setup can send."""

from __future__ import annotations

import sys

import click

from aftercare.checks import setup_problems
from aftercare.cli import render
from aftercare.cli.context import EXIT_USER_ERROR, Shown, Work, with_app
from aftercare.db import migrate


@click.command()
@with_app
def init(work: Work) -> Shown:
    """Create the database schema, or upgrade it to this release's. Safe to run again."""
    engine = work.app.engine
    before, after = migrate(engine)
    return render.database_ready(engine.url.render_as_string(hide_password=True), before, after)


@click.command()
@click.option("--offline", is_flag=True, help="Skip contacting Twilio and the SMTP relay.")
@with_app
def check(work: Work, offline: bool) -> Shown:
    """Check the setup: config, database, credentials, Twilio and the SMTP relay."""
    problems = setup_problems(work.app, live=not offline)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        sys.exit(EXIT_USER_ERROR)
    return render.setup_ok(work.app, offline=offline)
