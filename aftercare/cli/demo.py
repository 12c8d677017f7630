"""`demo`: sample patients on a throw-away database; reads no config.

`demo --serve` opens the staff console on such a database instead.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from aftercare.demo import CLINIC, DEMO_LOGINS, build_console_demo, free_port, run_demo

HOST = "127.0.0.1"  # the demo's logins are printed: never listen beyond this machine
DEFAULT_PORT = 8080  # `aftercare serve`'s default
ROLE_NAMES = {"frontdesk": "front desk", "clinician": "clinician", "admin": "admin"}


@click.command()
@click.option("--serve", is_flag=True,
              help="Open the staff console on a throw-away database with sample patients, "
                   "replies and one urgent case, until Ctrl-C.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="With --serve: the port on 127.0.0.1 (default 8080; another free one if "
                   "it is taken).")
def demo(serve: bool, port: int | None) -> None:
    """Play three sample patients' whole timelines in seconds (temporary database); with
    --serve, open the staff console on such a database instead."""
    if not serve:
        if port is not None:
            raise click.UsageError("--port goes with --serve")
        run_demo(sys.stdout)
        return
    with tempfile.TemporaryDirectory(prefix="aftercare-demo-") as folder:
        _serve(Path(folder), port or DEFAULT_PORT)
    click.echo("Demo stopped; its database is deleted.")


def _serve(folder: Path, wanted: int) -> None:
    """The console on the demo database in `folder`, until SIGTERM or Ctrl-C."""
    # Imported here: plain `demo` starts without loading the web stack.
    import uvicorn

    from aftercare.cli.logs import configure_logging
    from aftercare.cli.serve import _run
    from aftercare.web import create_app

    made = build_console_demo(folder, console=sys.stdout)
    port = free_port(HOST, wanted)
    width = max(len(login.email) for login in DEMO_LOGINS)
    lines = [f"aftercare demo console: {CLINIC.name}, on a temporary database "
             "(deleted when you stop it).",
             f"{made.patients} sample patients, their messages so far, and {made.waiting} "
             f"replies waiting ({made.urgent} urgent).", ""]
    if port != wanted:
        lines += [f"Port {wanted} is taken; using port {port} instead.", ""]
    lines += [f"Open http://{HOST}:{port}/ and sign in as:"]
    lines += [f"  {ROLE_NAMES[login.role]:<11} {login.email:<{width}}  password: {login.password}"
              for login in DEMO_LOGINS]
    lines += ["", "Messages are printed here instead of being sent (your answers from the "
              "inbox, and", "messages falling due). Ctrl-C stops the demo.", ""]
    shown = False

    async def listening() -> None:
        # uvicorn's main loop calls this on its first tick, once it listens (then every
        # timeout_notify seconds): printed once, when the URL already answers.
        nonlocal shown
        if not shown:
            shown = True
            click.echo("\n".join(lines))
            sys.stdout.flush()

    configure_logging(False, daemon=False)
    config = uvicorn.Config(create_app(made.app, send=True), host=HOST, port=port,
                            log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=5, callback_notify=listening)
    try:
        _run(config)
    finally:
        made.app.engine.dispose()
