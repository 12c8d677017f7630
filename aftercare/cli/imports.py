"""`import`: a day's completed sessions from the clinic's system, as CSV."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click

from aftercare.cli import views
from aftercare.cli.context import CLI_ACTOR, EXIT_USER_ERROR, Shown, Work, json_option, with_app
from aftercare.csv_import import import_csv


@click.command("import")
@click.argument("path", metavar="FILE.csv")
@click.option("--skip-invalid", is_flag=True,
              help="Import the good rows and list the bad ones (default: all or nothing).")
@json_option("Print the report as JSON.")
@with_app
def import_command(work: Work, path: str, skip_invalid: bool, as_json: bool) -> Shown:
    """Enroll a day's completed sessions from the clinic's system (CSV, one row per session)."""
    # import_csv runs its own transactions (all or nothing, or a chunk of rows at a time
    # with --skip-invalid), so it takes the App rather than work.db.
    app = work.app
    with ExitStack() as progress:
        advance: Callable[[int], None] | None = None

        def on_row(done: int, total: int) -> None:
            nonlocal advance
            if advance is None:  # opened at the first row applied, when the total is known
                advance = progress.enter_context(
                    click.progressbar(length=total, label="Importing", file=sys.stderr)).update
            advance(1)

        report = import_csv(app, Path(path), skip_invalid=skip_invalid, on_row=on_row,
                            actor=CLI_ACTOR)
    for problem in report.problems:
        click.echo(f"{'skipped' if skip_invalid else 'error'}: {problem}", err=True)
    if report.problems and not skip_invalid:
        click.echo(f"error: {report.bad_rows} bad row(s); nothing imported. Fix them, or "
                   "use --skip-invalid to import the good rows.", err=True)
        sys.exit(EXIT_USER_ERROR)
    return views.import_report_json(report) if as_json else report.summary()
