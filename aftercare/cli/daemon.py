"""`run`: the daemon, on the real clock."""

from __future__ import annotations

import click

from aftercare.cli.context import Shown, Work, with_app
from aftercare.cli.logs import configure_logging
from aftercare.daemon import run_daemon
from aftercare.errors import UserError


@click.command()
@with_app
def run(work: Work) -> Shown:
    """Run the daemon: send due messages every poll interval until SIGTERM or Ctrl-C."""
    if work.state.now:
        raise UserError("now", "the daemon runs on the real clock; use `send-due --now TIME` "
                        "for one pass at another time")
    configure_logging(work.state.verbose, daemon=True)
    run_daemon(work.app)
    return None
