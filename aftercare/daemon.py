"""The daemon: APScheduler as the clock, the database as the queue."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from aftercare.app import App
from aftercare.checks import require_setup

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 60


def run_daemon(app: App, stop: threading.Event | None = None,
               handle_signals: bool = True) -> None:
    """Dispatch every poll interval until `stop` is set (or SIGTERM/SIGINT arrives)."""
    require_setup(app)
    stop = stop or threading.Event()
    dispatcher = app.dispatcher()
    poll = app.settings.daemon.poll_seconds

    def dispatch() -> None:
        dispatcher.run_once(stop)

    def recover() -> None:
        dispatcher.recover_stale()

    scheduler = BackgroundScheduler(timezone="UTC")
    # Fixed jobs only; a missed tick is harmless because the next one catches up through SQL.
    common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None,
              "replace_existing": True}
    scheduler.add_job(recover, "interval", seconds=RECOVERY_SECONDS, id="recover",
                      next_run_time=datetime.now(UTC), **common)
    scheduler.add_job(dispatch, "interval", seconds=poll, id="dispatch",
                      next_run_time=datetime.now(UTC), **common)
    scheduler.add_listener(_on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    previous = {}
    if handle_signals:
        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, finishing the send in flight", signal.Signals(signum).name)
            stop.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)

    console = [name for name in ("sms", "email")
               if getattr(app.settings, name).provider == "console"]
    if console:
        log.warning("%s provider is console: messages are printed to stdout, not sent",
                    " and ".join(console))
    scheduler.start()
    log.info("daemon started: polling every %ss, database %s", poll,
             app.engine.url.render_as_string(hide_password=True))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop.set()
        scheduler.shutdown(wait=True)  # waits for the job in flight; the dispatcher stops
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("daemon stopped")


def _on_job_event(event: JobExecutionEvent) -> None:
    if event.exception is not None:
        log.error("job %s failed: %r", event.job_id, event.exception)
    else:
        log.warning("job %s missed its run time", event.job_id)
