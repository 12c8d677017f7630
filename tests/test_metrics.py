"""/healthz and /metrics: through the real HTTP app, and from a real `aftercare run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from aftercare.app import App
from aftercare.metrics import Heartbeat
from aftercare.web import create_app
from conftest import Clinic, FixedClock, midday_zone
from webhook_kit import PHONE, PUBLIC, SESSION, TOKEN, listening_app

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

# first_48h (SMS and email) fell due an hour after the session: 30 minutes overdue here.
NOW = SESSION + timedelta(hours=1, minutes=30)
DEADLINE = 20.0


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def app(clinic: Clinic, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> App:
    return listening_app(clinic, clock, monkeypatch)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus page: (name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _sms_reply(client: TestClient, body: str, sid: str) -> None:
    params = {"MessageSid": sid, "From": PHONE, "To": "+12125550100", "Body": body}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/sms", params)
    answer = client.post("/twilio/sms", content=urlencode(params),
                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                  "X-Twilio-Signature": signature})
    assert answer.status_code == 200


def test_a_scrape_after_sends_and_replies_shows_the_counters_move(app: App) -> None:
    client = TestClient(create_app(app))
    before = scrape(client.get("/metrics").text)
    assert value(before, "aftercare_messages", status="pending") == 16
    assert value(before, "aftercare_messages", status="sent") == 0
    assert value(before, "aftercare_oldest_overdue_seconds") == 30 * 60
    assert value(before, "aftercare_database_up") == 1

    assert app.dispatcher().run_once().sent == 2
    _sms_reply(client, "my thigh is hot and red, and I have a fever", "SM0001")
    _sms_reply(client, "STOP", "SM0002")
    _sms_reply(client, "STOP", "SM0002")  # Twilio retrying the same webhook: one reply

    page = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=")
    after = scrape(page.text)
    for channel in ("sms", "email"):
        assert value(after, "aftercare_sends_total", channel=channel, outcome="sent") \
            == value(before, "aftercare_sends_total", channel=channel, outcome="sent") + 1
        assert value(after, "aftercare_send_seconds_count", channel=channel) \
            == value(before, "aftercare_send_seconds_count", channel=channel) + 1
        assert value(after, "aftercare_send_seconds_bucket", channel=channel, le="+Inf") \
            == value(after, "aftercare_send_seconds_count", channel=channel)
    assert value(after, "aftercare_replies_received_total", keyword="stop") \
        == value(before, "aftercare_replies_received_total", keyword="stop") + 1
    assert value(after, "aftercare_replies_received_total", keyword="none") \
        == value(before, "aftercare_replies_received_total", keyword="none") + 1
    assert value(after, "aftercare_messages", status="sent") == 2
    # Nothing due is left waiting (STOP also cancelled what remained on SMS).
    assert value(after, "aftercare_oldest_overdue_seconds") == 0
    assert value(after, "aftercare_urgent_replies_open") == 1
    assert "Jane" not in page.text and PHONE not in page.text
    # Without a sender in this process there is no dispatch gauge.
    assert "aftercare_last_dispatch_seconds" not in page.text


def test_healthz_reports_the_oldest_overdue_message(app: App) -> None:
    answer = TestClient(create_app(app)).get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "oldest_overdue_seconds": 1800.0}


def test_healthz_is_503_when_the_database_is_unreachable(app: App, tmp_path: Path) -> None:
    app.engine = create_engine(f"sqlite:///{tmp_path / 'gone' / 'clinic.db'}")
    client = TestClient(create_app(app))
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["database"] == "unreachable"
    assert answer.json()["problems"] == ["database unreachable (OperationalError)"]
    # /metrics still answers, and says so, for the alert to fire on.
    page = client.get("/metrics")
    assert page.status_code == 200
    assert value(scrape(page.text), "aftercare_database_up") == 0


def _wait_for(predicate: Callable[[], object], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_healthz_is_503_when_the_scheduler_stalls(app: App, clock: FixedClock) -> None:
    web = create_app(app, send=True)
    with TestClient(web) as client:
        sender = web.state.sender
        _wait_for(lambda: sender.heartbeat.passes >= 1, "a first dispatch pass")
        answer = client.get("/healthz")
        assert answer.status_code == 200, answer.text
        assert answer.json()["scheduler"] == "ok"
        assert answer.json()["oldest_overdue_seconds"] == 0  # the pass sent what was due
        assert value(scrape(client.get("/metrics").text), "aftercare_last_dispatch_seconds") == 0

        sender.scheduler.shutdown(wait=True)  # the clock stops asking: no pass any more
        limit = sender.heartbeat.stall_after
        clock.now += timedelta(seconds=limit - 1)
        assert client.get("/healthz").status_code == 200  # late, not yet stalled
        clock.now += timedelta(seconds=2)
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json()["scheduler"] == "stalled"
        assert answer.json()["problems"] == [
            f"no dispatch progress for {limit + 1:.0f}s (limit {limit:.0f}s)"]


def test_a_long_pass_is_progress_not_a_stall(app: App, clock: FixedClock) -> None:
    heartbeat = Heartbeat.for_app(app)
    stop = heartbeat.watch(threading.Event())
    clock.now += timedelta(hours=1)
    assert heartbeat.stalled()
    assert not stop.is_set()  # the pass checks between messages: that is progress
    assert not heartbeat.stalled()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_run_serves_health_and_metrics_on_the_metrics_port(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", PHONE,
                "--email", "jane@example.com", "--timezone", midday_zone(), "--ref", "J1")
    session = datetime.now(UTC) - timedelta(hours=1, minutes=5)  # first_48h is due
    clinic.json("enroll", "J1", "--treatment", "cellulite", "--session-at", session.isoformat())
    port = _free_port()
    env = {**os.environ, "AFTERCARE_CONFIG": str(clinic.config)}
    proc = subprocess.Popen([sys.executable, "-m", "aftercare", "run", "--metrics-port",
                             str(port)], cwd=clinic.folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def get(path: str) -> tuple[int, str]:
        try:
            with urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                return int(answer.status), answer.read().decode()
        except HTTPError as refused:
            return refused.code, refused.read().decode()
        except OSError:
            return 0, ""

    def sent_twice() -> bool:
        status, text = get("/metrics")
        samples = scrape(text) if status == 200 else {}
        return value(samples, "aftercare_sends_total", channel="sms", outcome="sent") == 1 \
            and value(samples, "aftercare_sends_total", channel="email", outcome="sent") == 1

    try:
        _wait_for(sent_twice, "the daemon's metrics to count two sends")
        status, text = get("/healthz")
        assert status == 200, text
        body = json.loads(text)
        assert body["status"] == "ok" and body["scheduler"] == "ok"
        assert get("/")[0] == 404
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert f"health and metrics at http://127.0.0.1:{port}/healthz" in stderr
    assert "Traceback" not in stderr


def test_run_refuses_a_metrics_port_in_use(clinic: Clinic) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = clinic.run("run", "--metrics-port", str(port))
    assert result.exit_code == 2, result.output
    assert f"error: metrics-port: cannot listen on 127.0.0.1:{port}" in result.stderr
