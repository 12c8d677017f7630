"""The daemon: APScheduler as the clock, the database as the queue."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from aftercare import notices
from aftercare.app import App
from aftercare.checks import require_setup
from aftercare.dispatch import Dispatcher
from aftercare.errors import UserError
from aftercare.metrics import Heartbeat, serve_in_thread
from aftercare.polling import MIN_POLL_SECONDS, Poller
from aftercare.replies import settle_unhandled

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 60


@dataclass
class Sender:
    """The dispatch and recovery jobs of one process, on a background scheduler."""

    app: App
    stop: threading.Event
    scheduler: BackgroundScheduler
    heartbeat: Heartbeat  # for /healthz: a sender that stopped making progress is unhealthy
    dispatcher: Dispatcher | None = None  # closed at shutdown: its channels' connections

    @classmethod
    def start(cls, app: App, stop: threading.Event | None = None, *,
              check_setup: bool = True, heartbeat: Heartbeat | None = None) -> Sender:
        """Check the setup (unless the caller did), then dispatch every poll interval until
        `stop` is set, showing progress on `heartbeat` (a new one by default)."""
        if check_setup:
            require_setup(app)
        stop = stop or threading.Event()
        dispatcher = app.dispatcher()
        poll = app.settings.daemon.poll_seconds
        heartbeat = heartbeat or Heartbeat.for_app(app)

        def dispatch() -> None:
            heartbeat.beat()
            # Every check of `stop` between messages beats too: a long pass is not a stall.
            dispatcher.run_once(heartbeat.watch(stop))
            heartbeat.beat(finished=True)

        scheduler = BackgroundScheduler(timezone="UTC")
        # Fixed jobs only; a missed tick is harmless because the next one catches up
        # through SQL. Recovery leaves this process's pass in flight alone (claim tokens).
        common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None,
                  "replace_existing": True}
        scheduler.add_job(dispatcher.recover_stale, "interval", seconds=RECOVERY_SECONDS,
                          id="recover", next_run_time=datetime.now(UTC), **common)
        scheduler.add_job(dispatch, "interval", seconds=poll, id="dispatch",
                          next_run_time=datetime.now(UTC), **common)

        # Replies stored but not acted on; alerts, their escalation and staff replies.
        # Two jobs, so a reply that keeps failing never holds up an alert.
        scheduler.add_job(settle_unhandled, "interval", args=[app], seconds=poll,
                          id="replies", next_run_time=datetime.now(UTC), **common)
        scheduler.add_job(notices.run_once, "interval", args=[app], seconds=poll,
                          id="notices", next_run_time=datetime.now(UTC), **common)
        if app.settings.sms.provider == "twilio" and app.settings.sms_inbound == "poll":
            # No public URL: ask Twilio for replies and receipts (Poller.run never raises).
            scheduler.add_job(Poller(app).run, "interval", seconds=max(poll, MIN_POLL_SECONDS),
                              id="poll", next_run_time=datetime.now(UTC), **common)
        scheduler.add_listener(_on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        console = [name for name in ("sms", "email")
                   if getattr(app.settings, name).provider == "console"]
        if console:
            log.warning("%s provider is console: messages are printed to stdout, not sent",
                        " and ".join(console))
        scheduler.start()
        return cls(app, stop, scheduler, heartbeat, dispatcher)

    def describe(self) -> str:
        """For the start-up log line: the poll interval and the database (no password)."""
        return (f"polling every {self.app.settings.daemon.poll_seconds}s, database "
                f"{self.app.engine.url.render_as_string(hide_password=True)}")

    def shutdown(self) -> None:
        """Stop claiming, finish the sends in flight, give back what was not started, then
        close the channels' connections."""
        self.stop.set()
        if self.scheduler.running:  # a test may have stopped it already, to stall the sender
            # Waits for the dispatch pass: it returns once its sends in flight are recorded
            # and its unstarted claims given back.
            self.scheduler.shutdown(wait=True)
        if self.dispatcher is not None:
            self.dispatcher.close()


def run_daemon(app: App, stop: threading.Event | None = None,
               handle_signals: bool = True, metrics_port: int | None = None) -> None:
    """Dispatch every poll interval until `stop` is set (or SIGTERM/SIGINT arrives); with
    `metrics_port`, serve /healthz and /metrics on 127.0.0.1 meanwhile."""
    stop = stop or threading.Event()
    previous = {}
    if handle_signals:
        # Before anything starts: a SIGTERM while the sender starts must stop it cleanly,
        # not kill the process with sends in flight.
        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, finishing the send in flight", signal.Signals(signum).name)
            stop.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        _serve(app, stop, metrics_port)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve(app: App, stop: threading.Event, metrics_port: int | None) -> None:
    heartbeat = Heartbeat.for_app(app)
    metrics = None
    if metrics_port is not None:
        # Bound before sending starts: a port in use stops the command before any send.
        try:
            metrics = serve_in_thread(app, heartbeat, metrics_port)
        except OSError as exc:
            raise UserError("metrics-port", f"cannot listen on 127.0.0.1:{metrics_port}: "
                            f"{exc.strerror or exc}") from None
    try:
        sender = Sender.start(app, stop, heartbeat=heartbeat)
    except BaseException:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        raise
    if metrics is not None:
        log.info("health and metrics at http://127.0.0.1:%d/healthz and /metrics", metrics_port)
    log.info("daemon started: %s", sender.describe())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sender.shutdown()
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        log.info("daemon stopped")


class _QuietBusyJobs(logging.Filter):
    """APScheduler warns at every tick a job is still running ("maximum number of running
    instances reached"): with a long pass and a short poll, many lines a second of nothing
    wrong (the next pass catches up through SQL). Those go to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and \
                "maximum number of running instances reached" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("apscheduler.scheduler").addFilter(_QuietBusyJobs())


def _on_job_event(event: JobExecutionEvent) -> None:
    if event.exception is not None:
        log.error("job %s failed: %r", event.job_id, event.exception)
    else:
        log.warning("job %s missed its run time", event.job_id)
