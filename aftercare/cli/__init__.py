"""The `aftercare` command: parse, call the library, print. User errors exit with status 2.

One module per command group; `context` holds what they share, `views` every JSON shape,
`render` every text for people.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from aftercare.cli import (
    courses,
    daemon,
    demo,
    enroll,
    imports,
    inbox,
    messages,
    patients,
    protocols,
    serve,
    sessions,
    setup,
    timeline,
    users,
)
from aftercare.cli.context import EXIT_USER_ERROR, CliState
from aftercare.cli.logs import configure_logging
from aftercare.errors import UserError

__all__ = ["cli", "main"]


def _fail(error: UserError) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_USER_ERROR)


class _Group(click.Group):
    """Turns every UserError raised by a command into one line on stderr and exit 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as error:
            _fail(error)


@click.group(cls=_Group)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Config file (also AFTERCARE_CONFIG; default ./config/aftercare.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log what is done (counts, never patient data).")
@click.option("--now", "now", metavar="TIME",
              help="Act as if the clock read TIME (ISO 8601) for the whole command: due times, "
                   "quiet hours, validity windows, claims and leases (replays and tests; `run` "
                   "refuses it).")
@click.version_option(package_name="aftercare")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool, now: str | None) -> None:
    """Aftercare messages for patients between mesotherapy sessions."""
    # Replaces whatever obj the caller passed (the tests pass {}): commands find it by type.
    ctx.obj = CliState(config=config, now=now, verbose=verbose)
    configure_logging(verbose, daemon=False)


for _command in (setup.init, setup.check, patients.patient, enroll.enroll, sessions.session_group,
                 courses.course_group, timeline.timeline_command, messages.messages,
                 messages.send_due, imports.import_command, protocols.protocols,
                 protocols.preview_command, daemon.run, serve.serve, inbox.inbox_group,
                 inbox.reply_command, users.user_group,
                 demo.demo):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the `aftercare` script."""
    cli()
