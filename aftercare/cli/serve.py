"""`serve`: the one service process: HTTP (Twilio's webhooks) and the dispatch scheduler."""

from __future__ import annotations

import logging
import signal
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import click

from aftercare.checks import require_setup
from aftercare.cli.context import Shown, Work, with_app
from aftercare.cli.logs import configure_logging
from aftercare.errors import UserError
from aftercare.staff import list_users

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("aftercare.serve")


@click.command()
@click.option("--host", help="Address to listen on (default: web.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: web.port, 8080).")
@with_app
def serve(work: Work, host: str | None, port: int | None) -> Shown:
    """Run the service: Twilio's webhooks over HTTP and the daemon's sending, in one process.

    SIGTERM or Ctrl-C: stop taking requests, answer those in flight, finish the send in
    flight, then exit.
    """
    if work.state.now:
        raise UserError("now", "the service runs on the real clock; use `send-due --now TIME` "
                        "for one pass at another time")
    require_setup(work.app)  # a broken setup is one line and exit 2, before listening
    # Imported here: every other command starts without loading the web stack.
    import uvicorn

    from aftercare.web import create_app

    configure_logging(work.state.verbose, daemon=True)
    settings = work.app.settings.web
    with work.app.db() as db:  # not the command's unit of work: that would stay open while serving
        accounts = len(list_users(db))
    log.info("console at http://%s:%d/ (%d staff account(s))", host or settings.host,
             port or settings.port, accounts)
    if not accounts:
        log.warning("no staff account can sign in to the console yet; add one with "
                    "`aftercare user add EMAIL --name NAME --role admin`")
    config = uvicorn.Config(create_app(work.app, send=True), host=host or settings.host,
                            port=port or settings.port, log_config=None, access_log=False,
                            server_header=False, timeout_graceful_shutdown=30)
    _run(config)
    return None


def _run(config: uvicorn.Config) -> None:
    """uvicorn's server, stopping on SIGTERM/SIGINT like `aftercare run`: it stops taking
    requests, answers those in flight, runs the app's shutdown (the sender finishes its send
    in flight) and exits with status 0 (uvicorn itself would re-raise the signal)."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            def stop(signum: int, _frame: FrameType | None) -> None:
                log.info("received %s, finishing the requests and the send in flight",
                         signal.Signals(signum).name)
                self.should_exit = True

            previous = {signum: signal.signal(signum, stop)
                        for signum in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    asyncio.run(Server(config).serve())
