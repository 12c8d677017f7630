"""Edge cases of re-planning found in review: claims that outlive a booking, moves after
reminders went out, stale revivals, visits recorded out of order, absurd dates."""

from __future__ import annotations

import io

import pytest

from aftercare.outbox import next_due
from conftest import Clinic, FixedClock, run_at, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL


@pytest.fixture
def jane(clinic: Clinic) -> Clinic:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--ref", "J1")
    return clinic


def _sent(clinic: Clinic) -> list[tuple[str, str]]:
    return clinic.rows("SELECT step, sent_at FROM message WHERE status = 'sent' "
                       "AND step NOT IN ('first_48h', 'arnica', 'activity', 'check_48h', "
                       "'routine', 'results') ORDER BY sent_at")


def test_a_nudge_claimed_before_a_booking_is_not_sent_after_it(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30")
    # A dispatcher claimed the nudge and died before sending it.
    jane.rows("UPDATE message SET status = 'sending', claimed_at = '2020-01-01 00:00:00.000000', "
              "attempts = 1 WHERE step = 'rebook'")
    jane.json("--now", "2026-06-08T10:30-04:00", "session", "book", "J1", "--at",
              "2026-06-10T10:30")
    assert jane.rows("SELECT DISTINCT status FROM message WHERE step = 'rebook'") == [
        ("sending",)]  # in flight: re-planning leaves it alone
    counts = jane.json("send-due", "--now", "2026-06-08T10:41-04:00")
    assert counts["cancelled"] == 1  # (the routine message due then was sent)
    assert jane.rows("SELECT DISTINCT status, last_error FROM message WHERE step = 'rebook'") == [
        ("cancelled", "a later session is booked or done")]


def test_moving_a_session_after_its_reminders_went_gives_the_new_time_reminders(
        jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30", "--next-session-at", "2026-06-08T10:30")
    app = jane.app(clock=FixedClock(utc("2026-06-07T12:00-04:00")), console=io.StringIO())
    dispatcher = app.dispatcher()
    while (due := next_due(app.engine)) is not None and due <= utc("2026-06-07T12:00-04:00"):
        run_at(dispatcher, due)
    out = jane.json("--now", "2026-06-07T12:00-04:00", "session", "reschedule", "2",
                    "--at", "2026-06-15T10:30")
    assert out["at"] == "2026-06-15T14:30:00+00:00"
    while (due := next_due(app.engine)) is not None and due <= utc("2026-06-15T10:00-04:00"):
        run_at(dispatcher, due)
    assert _sent(jane) == [
        ("next_session", "2026-06-06 14:00:00.000000"),
        ("session_reminder", "2026-06-07 14:30:00.000000"),
        # The patient was told 8 June; the new date gets its own reminders.
        ("next_session", "2026-06-13 14:00:00.000000"),
        ("session_reminder", "2026-06-14 14:30:00.000000")]


def test_a_new_time_zone_does_not_repeat_a_reminder_already_sent(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30", "--next-session-at", "2026-06-08T10:30")
    jane.json("send-due", "--now", "2026-06-06T10:05-04:00")
    jane.json("--now", "2026-06-06T11:00-04:00", "patient", "update", "J1", "--timezone",
              "America/Los_Angeles")
    assert jane.rows("SELECT status, count(*) FROM message WHERE step = 'next_session' "
                     "GROUP BY status") == [("sent", 1)]


def test_an_opt_in_does_not_revive_a_message_past_its_window(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30")
    jane.run("--now", "2026-06-01T12:00-04:00", "patient", "opt-out", "J1", "--channel", "sms")
    # Day 4: the 48-hour check's window (03 June 10:30 + 24h) has closed.
    jane.run("--now", "2026-06-04T10:00-04:00", "patient", "opt-in", "J1", "--channel", "sms")
    revived = jane.rows("SELECT step, expires_at FROM message WHERE status = 'pending' "
                        "ORDER BY send_after")
    assert revived[0] == ("check_48h", "2026-06-04 14:30:00.000000")  # its own window's end
    counts = jane.json("send-due", "--now", "2026-06-05T09:30-04:00")
    assert jane.rows("SELECT status FROM message WHERE step = 'check_48h'") == [("expired",)]
    assert counts["expired"] == 1


def test_a_visit_on_another_day_than_booked_is_that_session(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30", "--sessions-planned", "3",
              "--next-session-at", "2026-06-08T10:30")
    jane.json("--now", "2026-06-10T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-10T10:30")
    course = jane.json("course", "show", "1")
    assert [(s["number"], s["status"]) for s in course["sessions"]] == [
        (1, "completed"), (2, "completed")]
    assert course["status"] == "active"  # two of three sessions done: nudge, no maintenance
    steps = {s for (s,) in jane.rows("SELECT DISTINCT step FROM message WHERE status = "
                                     "'pending'")}
    assert "rebook" in steps and "maintenance" not in steps


def test_a_visit_recorded_late_takes_its_place_in_the_course(jane: Clinic) -> None:
    for day in ("2026-06-01", "2026-06-15", "2026-06-08"):
        jane.json("--now", "2026-06-15T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
                  "--session-at", f"{day}T10:30", "--sessions-planned", "3")
    course = jane.json("course", "show", "1")
    assert [(s["at"][:10], s["number"]) for s in course["sessions"]] == [
        ("2026-06-01", 1), ("2026-06-08", 2), ("2026-06-15", 3)]
    assert course["status"] == "completed"


@pytest.mark.parametrize(("args", "message"), [
    (("session", "book", "J1", "--at", "9999-12-31T23:00"), "error: at: '9999-12-31T23:00' is "
     "not a plausible date"),
    (("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30",
      "--next-session-at", "9999-12-31T23:00"), "error: next-session-at: '9999-12-31T23:00'"),
    (("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30",
      "--session-number", "99999999999999999999"), "error: session-number: must be between"),
])
def test_absurd_values_are_user_errors(jane: Clinic, args: tuple[str, ...], message: str) -> None:
    result = jane.run("--now", "2026-06-01T11:00-04:00", *args)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.stderr
    assert jane.count("session") == 0


def test_a_non_ascii_digit_in_a_csv_is_a_bad_row(jane: Clinic) -> None:
    path = jane.folder / "day.csv"
    path.write_text("ref,name,phone,email,timezone,locale,channels,treatment,area,session_at,"
                    "session_number,next_session_at\n"
                    "J1,Jane Doe,+12125550123,,,,,cellulite,,2026-06-01T10:30,\u00b2,\n",
                    encoding="utf-8")
    result = jane.run("--now", "2026-06-01T11:00-04:00", "import", str(path))
    assert result.exit_code == 2
    assert "line 2: session_number:" in result.stderr and "Traceback" not in result.stderr
    assert jane.count("session") == 0


def test_booking_refuses_a_treatment_that_is_not_the_courses(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:00-04:00", "enroll", "J1", "--treatment", "cellulite",
              "--session-at", "2026-06-01T10:30")
    result = jane.run("--now", "2026-06-01T11:00-04:00", "session", "book", "J1", "--at",
                      "2026-06-09T10:00", "--course", "1", "--treatment", "mesobotox")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: treatment: course 1 is cellulite, not mesobotox")
    assert jane.count("session") == 1
