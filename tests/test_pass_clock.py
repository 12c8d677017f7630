"""One clock: a pass judges each message at the time it reaches it, and --now means one thing."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta

import pytest

from aftercare.channels import Channel, Outgoing
from conftest import Clinic, FixedClock, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

EVENING = utc("2026-03-02T19:58-05:00")  # two minutes before quiet hours


class SlowChannel(Channel):
    """Sends, then lets the test move the clock as a slow provider would."""

    def __init__(self, name: str, after_send: Callable[[], None]) -> None:
        self.name = name
        self.after_send = after_send
        self.sent: list[Outgoing] = []

    def send(self, message: Outgoing) -> str:
        self.sent.append(message)
        self.after_send()
        return f"slow-{message.message_id}"


def test_a_pass_that_runs_into_quiet_hours_holds_what_is_left(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                "--email", "jane@example.com", "--ref", "J1")
    # first_48h falls due one hour after the session, at 19:58 on both channels.
    clinic.json("--now", "2026-03-02T19:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T18:58")
    clock = FixedClock(EVENING)

    def three_minutes() -> None:
        clock.now += timedelta(minutes=3)

    app = clinic.app(clock=clock, console=io.StringIO())
    channel = SlowChannel("both", three_minutes)
    app.channels.update(sms=channel, email=channel)
    counts = app.dispatcher().run_once()
    assert (counts.sent, counts.deferred) == (1, 1)
    (sent_at,), = clinic.rows("SELECT sent_at FROM message WHERE status = 'sent'")
    assert sent_at.startswith("2026-03-03 01:01")  # when the send ended, not the pass began
    (held,), = clinic.rows("SELECT send_after FROM message WHERE step = 'first_48h' "
                           "AND status = 'pending'")
    assert held.startswith("2026-03-03 14:00")  # 09:00 New York, the end of quiet hours


def test_now_after_send_due_is_the_same_clock_for_claims_and_leases(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--email", "jane@example.com",
                "--ref", "J1")
    clinic.json("--now", "2030-03-04T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2030-03-04T10:30")
    # A sender died mid-send at 11:30 on that (future) day: its claim is the clock's time.
    clinic.rows("UPDATE message SET status = 'sending', attempts = 1, "
                "claimed_at = '2030-03-04 16:30:00.000000' WHERE step = 'first_48h'")
    result = clinic.run("send-due", "--now", "2030-03-04T11:40-05:00", "--json")
    assert result.exit_code == 0, result.output
    # Ten minutes on that clock is past the lease: the row was taken back and sent.
    assert clinic.rows("SELECT status, attempts FROM message WHERE step = 'first_48h'") == [
        ("sent", 2)]


def test_now_given_twice_must_agree(clinic: Clinic) -> None:
    result = clinic.run("--now", "2030-03-04T11:00", "send-due", "--now", "2030-03-04T12:00")
    assert result.exit_code == 2
    assert "now: given twice" in result.stderr
