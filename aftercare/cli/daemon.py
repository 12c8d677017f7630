"""`run`: the daemon, on the real clock."""

from __future__ import annotations

import click

from aftercare.cli.context import Shown, Work, with_app
from aftercare.cli.logs import configure_logging
from aftercare.daemon import run_daemon
from aftercare.errors import UserError


@click.command()
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Also serve /healthz and /metrics (Prometheus) on 127.0.0.1:PORT.")
@with_app
def run(work: Work, metrics_port: int | None) -> Shown:
    """Run the daemon: send due messages every poll interval until SIGTERM or Ctrl-C."""
    if work.state.now:
        raise UserError("now", "the daemon runs on the real clock; use `send-due --now TIME` "
                        "for one pass at another time")
    configure_logging(work.state.verbose, daemon=True)
    run_daemon(work.app, metrics_port=metrics_port)
    return None
