"""The daemon: starts, sends what is due, and stops cleanly on a signal."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aftercare.channels import Channel, Outgoing
from aftercare.daemon import run_daemon
from conftest import Clinic, midday_zone

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

DEADLINE = 20.0  # generous: waits end as soon as the awaited effect is seen


def _wait_for(predicate: Callable[[], object], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _enroll_due_now(clinic: Clinic) -> None:
    """A patient whose first messages are due at the real current time."""
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                "--email", "jane@example.com", "--timezone", midday_zone(), "--ref", "J1")
    session = (datetime.now(UTC) - timedelta(hours=1, minutes=5)).isoformat()
    clinic.json("enroll", "J1", "--treatment", "cellulite", "--session-at", session)


def _sent(clinic: Clinic) -> int:
    return clinic.count("message WHERE status = 'sent'")


def test_daemon_process_sends_and_stops_on_sigterm(clinic: Clinic) -> None:
    _enroll_due_now(clinic)
    env = {**os.environ, "AFTERCARE_CONFIG": str(clinic.config)}
    proc = subprocess.Popen([sys.executable, "-m", "aftercare", "run"], cwd=clinic.folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _sent(clinic) == 2, "the first messages to be sent")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "daemon started" in stderr and "received SIGTERM" in stderr
    assert "daemon stopped" in stderr
    assert "Traceback" not in stderr
    # Logs carry counts and ids, never the patient's contact data or the message text.
    assert "+12125550123" not in stderr and "jane@example.com" not in stderr
    assert "Reply STOP" not in stderr
    assert "Reply STOP" in stdout  # the console channel printed the first SMS


class SlowChannel(Channel):
    """An SMS channel whose send waits until the test releases it."""

    name = "sms"

    def __init__(self) -> None:
        self.in_flight, self.release = threading.Event(), threading.Event()

    def send(self, message: Outgoing) -> str:
        self.in_flight.set()
        self.release.wait(DEADLINE)
        return "slow-1"


def test_stop_waits_for_the_send_in_flight(clinic: Clinic) -> None:
    _enroll_due_now(clinic)
    slow = SlowChannel()
    in_flight, release = slow.in_flight, slow.release
    stop = threading.Event()
    app = clinic.app(console=io.StringIO())
    app.channels["sms"] = slow
    daemon = threading.Thread(target=run_daemon, args=(app, stop, False), daemon=True)
    daemon.start()
    try:
        assert in_flight.wait(DEADLINE)
        stop.set()  # what SIGTERM does
        daemon.join(0.5)
        assert daemon.is_alive(), "the daemon must not quit in the middle of a send"
    finally:
        stop.set()
        release.set()
        daemon.join(DEADLINE)
    assert not daemon.is_alive()
    rows = clinic.rows("SELECT channel, status, provider_id FROM message "
                       "WHERE step = 'first_48h' ORDER BY channel")
    # The SMS in flight was recorded; the email claimed behind it was given back.
    assert rows == [("email", "pending", None), ("sms", "sent", "slow-1")]


def test_stop_with_several_sends_at_once_finishes_them_then_closes_the_channels(
        clinic: Clinic) -> None:
    _enroll_due_now(clinic)
    in_flight, release = threading.Event(), threading.Event()
    stop = threading.Event()

    class PooledChannel(Channel):
        concurrency = 2  # sent by the pass's workers
        closed = False

        def __init__(self, name: str) -> None:
            self.name = name

        def send(self, message: Outgoing) -> str:
            in_flight.set()
            release.wait(DEADLINE)
            return f"pooled-{message.message_id}"

        def close(self) -> None:
            self.closed = True

    app = clinic.app(console=io.StringIO())
    channels = [PooledChannel("sms"), PooledChannel("email")]
    app.channels.update(sms=channels[0], email=channels[1])
    daemon = threading.Thread(target=run_daemon, args=(app, stop, False), daemon=True)
    daemon.start()
    try:
        assert in_flight.wait(DEADLINE)
        stop.set()  # what SIGTERM does
        daemon.join(0.5)
        assert daemon.is_alive(), "the daemon must not quit in the middle of a send"
        assert not any(channel.closed for channel in channels)
    finally:
        stop.set()
        release.set()
        daemon.join(DEADLINE)
    assert not daemon.is_alive()
    rows = clinic.rows("SELECT channel, status, attempts FROM message "
                       "WHERE step = 'first_48h' ORDER BY channel")
    # The SMS in flight was recorded; the email waiting behind it (one patient, one send at
    # a time) was given back untouched; then the channels let go of their connections.
    assert rows == [("email", "pending", 0), ("sms", "sent", 1)]
    assert all(channel.closed for channel in channels)


def test_daemon_refuses_an_uninitialised_database(clinic: Clinic, tmp_path: Path) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'fresh.db'}'\n")
    result = clinic.run("--config", str(config), "run")
    assert result.exit_code == 2
    assert "aftercare init" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_answers_webhooks_and_sends_in_one_process(clinic: Clinic) -> None:
    from urllib.error import HTTPError
    from urllib.parse import urlencode
    from urllib.request import Request, urlopen

    from twilio.request_validator import RequestValidator

    _enroll_due_now(clinic)
    port, token = _free_port(), "0123456789abcdef0123456789abcdef"
    public = "https://aftercare.clinic.example"
    clinic.config.write_text(clinic.config.read_text() + f'\n[web]\nport = {port}\n'
                             f'public_url = "{public}"\n', encoding="utf-8")
    env = {**os.environ, "AFTERCARE_CONFIG": str(clinic.config), "TWILIO_AUTH_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "aftercare", "serve"], cwd=clinic.folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def healthy() -> bool:
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        _wait_for(healthy, "the service to listen")
        _wait_for(lambda: _sent(clinic) == 2, "the sender to send what is due")
        params = {"MessageSid": "SM0001", "From": "+12125550123", "To": "+12125550100",
                  "Body": "STOP"}
        signed = RequestValidator(token).compute_signature(public + "/twilio/sms", params)
        request = Request(f"http://127.0.0.1:{port}/twilio/sms", data=urlencode(params).encode(),
                          headers={"X-Twilio-Signature": signed})
        with urlopen(request, timeout=DEADLINE) as answer:
            assert answer.status == 200
        forged = Request(f"http://127.0.0.1:{port}/twilio/sms", data=urlencode(params).encode(),
                         headers={"X-Twilio-Signature": "forged"})
        try:
            urlopen(forged, timeout=DEADLINE)
            raise AssertionError("a forged webhook was accepted")
        except HTTPError as refused:
            assert refused.code == 403
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "service started" in stderr and "service stopped" in stderr
    assert "Traceback" not in stderr
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    assert "+12125550123" not in stderr and "STOP" not in stderr.replace("SIGTERM", "")


START_WITH_A_SIGTERM = """
import os, signal, sys
from aftercare import daemon
from aftercare.app import App

started = daemon.Sender.start

def start(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the sender starts
    return started(*args, **kwargs)

daemon.Sender.start = start
daemon.run_daemon(App.from_config(sys.argv[1]))
print("stopped cleanly")
"""


@pytest.mark.sqlite_only  # about signals, not the database
def test_a_sigterm_while_the_sender_starts_stops_it_cleanly(clinic: Clinic) -> None:
    # The handlers used to be installed after the sender had started: a SIGTERM in between
    # killed the process with sends in flight.
    done = subprocess.run([sys.executable, "-c", START_WITH_A_SIGTERM, str(clinic.config)],
                          cwd=clinic.folder, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "stopped cleanly" in done.stdout


@pytest.mark.sqlite_only
def test_a_long_pass_does_not_flood_the_log(clinic: Clinic,
                                            caplog: pytest.LogCaptureFixture) -> None:
    # APScheduler warned at every tick while a pass ran longer than the poll interval.
    _enroll_due_now(clinic)
    slow = SlowChannel()
    in_flight, release = slow.in_flight, slow.release
    stop = threading.Event()
    app = clinic.app(console=io.StringIO())
    app.channels["sms"] = slow
    skipped: list[logging.LogRecord] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "maximum number of running instances" in record.getMessage():
                skipped.append(record)

    scheduler_log = logging.getLogger("apscheduler.scheduler")
    seen, level = Seen(level=logging.DEBUG), scheduler_log.level
    scheduler_log.addHandler(seen)
    scheduler_log.setLevel(logging.DEBUG)  # to see the demoted lines arrive
    caplog.set_level(logging.INFO)
    daemon = threading.Thread(target=run_daemon, args=(app, stop, False), daemon=True)
    daemon.start()
    try:
        assert in_flight.wait(DEADLINE)
        _wait_for(lambda: len(skipped) >= 3, "ticks skipped while the pass runs")  # poll 0.2 s
    finally:
        stop.set()
        release.set()
        daemon.join(DEADLINE)
        scheduler_log.removeHandler(seen)
        scheduler_log.setLevel(level)
    assert {record.levelno for record in skipped} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "maximum number of running instances" in r.getMessage()]
