"""The `aftercare` command: parse, call the library, print. User errors exit with status 2.

One module per command group; `context` holds what they share, `views` every JSON shape,
`render` every text for people. A command's module is imported only when that command runs
or its own help is shown, so `send-due` does not pay for the web service, Twilio or Argon2.
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

import click

from aftercare.cli.context import EXIT_USER_ERROR, CliState
from aftercare.cli.logs import configure_logging
from aftercare.errors import UserError

__all__ = ["COMMANDS", "cli", "main"]

# name -> (module in aftercare.cli, attribute, the first paragraph of the command's help,
# which `aftercare --help` lists without importing the module). tests/test_start_cost.py
# checks every line against the command itself.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("setup", "init",
             "Create the database schema, or upgrade it to this release's. Safe to run again."),
    "check": ("setup", "check",
              "Check the setup: config, database, credentials, Twilio and the SMTP relay."),
    "patient": ("patients", "patient", "Add, show, update, opt out and forget patients."),
    "enroll": ("enroll", "enroll", "Enroll PATIENT (id or ref) after a session; plans every "
               "message of the protocol."),
    "session": ("sessions", "session_group", "Book, reschedule, cancel and complete sessions."),
    "course": ("courses", "course_group", "Show and withdraw courses."),
    "timeline": ("timeline", "timeline_command", "PATIENT's sessions and messages, past and "
                 "future, in the patient's local time."),
    "messages": ("messages", "messages",
                 "What will be sent, and when; what was sent, and what happened to it."),
    "send-due": ("messages", "send_due",
                 "One dispatch pass: settle interrupted sends, send everything due, then stop."),
    "import": ("imports", "import_command", "Enroll a day's completed sessions from the "
               "clinic's system (CSV, one row per session)."),
    "protocols": ("protocols", "protocols",
                  "List the treatments: course, maintenance and every step with its timing."),
    "preview": ("protocols", "preview_command",
                "Show every message of a treatment as a sample patient would receive it."),
    "run": ("daemon", "run",
            "Run the daemon: send due messages every poll interval until SIGTERM or Ctrl-C."),
    "serve": ("serve", "serve", "Run the service: Twilio's webhooks over HTTP and the "
              "daemon's sending, in one process."),
    "inbox": ("inbox", "inbox_group",
              "Replies from patients waiting for the clinic, urgent first (or `--all`)."),
    "reply": ("inbox", "reply_command", "Send PATIENT an SMS from the clinic now (staff's "
              "own words, not a planned message)."),
    "user": ("users", "user_group", "Staff accounts that sign in to the console (aftercare "
             "serve)."),
    "demo": ("demo", "demo", "Play three sample patients' whole timelines in seconds "
             "(temporary database); with --serve, open the staff console on such a database "
             "instead."),
}


def _fail(error: UserError) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_USER_ERROR)


class _Group(click.Group):
    """Loads each command's module on first use, and turns every UserError raised by a
    command into one line on stderr and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, _ = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"aftercare.cli.{module}"), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The list from the table: importing every command for one line each would cost
        # `aftercare --help` a second.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in COMMANDS and name not in self.commands:
                # A stand-in command shortens the line exactly as the real one would.
                stand_in = click.Command(name, help=COMMANDS[name][2])
                rows.append((name, stand_in.get_short_help_str(limit)))
            else:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


def main() -> None:
    """Entry point of the `aftercare` script."""
    cli()
