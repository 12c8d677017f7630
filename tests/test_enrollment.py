"""Enrollment plans the protocol's messages at the right times, once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aftercare.protocols import ProtocolBook
from conftest import Clinic, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

# Saturday 7 March 2026, 10:30 in New York; DST starts Sunday 8 March at 02:00.
SESSION = "2026-03-07T10:30"
NOW = "2026-03-07T11:00-05:00"


@pytest.fixture
def jane(clinic: Clinic) -> Clinic:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "(212) 555-0123",
                "--email", "Jane@Example.com", "--ref", "J1")
    return clinic


def _enroll(clinic: Clinic, *extra: str, now: str = NOW) -> dict:
    return clinic.json("--now", now, "enroll", "J1", "--treatment", "cellulite",
                       "--session-at", SESSION, *extra)


def test_patient_add_json_and_normalised_contact(clinic: Clinic) -> None:
    out = clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "(212) 555-0123",
                      "--email", "jane@example.com", "--ref", "J1")
    assert set(out) == {"id", "ref"} and out["ref"] == "J1" and isinstance(out["id"], int)
    assert clinic.rows("SELECT phone, email, timezone, locale, channels FROM patient") == [
        ("+12125550123", "jane@example.com", "America/New_York", "en", "sms,email")]


def test_enroll_plans_every_step_on_every_channel(jane: Clinic) -> None:
    out = _enroll(jane, "--area", "thighs", "--next-session-at", "2026-03-21T10:30")
    assert set(out) == {"course_id", "session_id", "messages"}
    protocol = ProtocolBook.load().get("cellulite")
    # The session's aftercare and the booked session's reminders; no nudge to rebook (the
    # next session is booked) and no maintenance (the course has five sessions to go).
    expected = {(s.key, c) for s in protocol.steps for c in s.channels
                if s.anchor in ("session", "next_session") and s.applies_to(1, protocol.sessions)}
    assert ("next_session", "sms") in expected and ("results", "sms") in expected
    assert {(m["step"], m["channel"]) for m in out["messages"]} == expected
    for message in out["messages"]:
        assert set(message) == {"id", "step", "channel", "send_after", "status"}
        assert message["status"] == "pending"
        assert message["send_after"].endswith("+00:00")


def test_times_follow_the_patients_zone_across_dst(jane: Clinic) -> None:
    out = _enroll(jane, "--next-session-at", "2026-03-21T10:30")
    at = {m["step"]: utc(m["send_after"]) for m in out["messages"] if m["channel"] == "sms"}
    session = utc("2026-03-07T10:30-05:00")
    assert at["first_48h"] == session + timedelta(hours=1)
    # after = "4h" lands at 14:30, outside quiet hours.
    assert at["arnica"] == session + timedelta(hours=4)
    # "next day at 10:00": Sunday 8 March is the DST switch, 10:00 is now UTC-4.
    assert at["activity"] == utc("2026-03-08T10:00-04:00")
    assert at["check_48h"] == session + timedelta(hours=48)
    assert at["routine"] == utc("2026-03-13T10:00-05:00") + timedelta(hours=-1)
    assert at["next_session"] == utc("2026-03-19T10:00-04:00")
    assert at["results"] == utc("2026-04-18T10:00-04:00")


def test_quiet_hours_move_a_late_step_to_the_next_morning(jane: Clinic) -> None:
    out = jane.json("--now", "2026-03-07T18:30-05:00", "enroll", "J1", "--treatment",
                    "cellulite", "--session-at", "2026-03-07T18:00")
    at = {m["step"]: utc(m["send_after"]) for m in out["messages"] if m["channel"] == "sms"}
    assert at["first_48h"] == utc("2026-03-07T19:00-05:00")  # before quiet_start 20:00
    # 22:00 is quiet: held to 09:00 Sunday, which is already daylight time.
    assert at["arnica"] == utc("2026-03-08T09:00-04:00")


def test_same_session_twice_plans_nothing_new(jane: Clinic) -> None:
    first = _enroll(jane, "--next-session-at", "2026-03-21T10:30")
    again = _enroll(jane, "--next-session-at", "2026-03-21T10:30")
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in first["messages"]]
    assert again["session_id"] == first["session_id"]
    assert again["course_id"] == first["course_id"]
    assert jane.count("message") == len(first["messages"])
    assert jane.count("session") == 2  # the session done and the one booked
    text = jane.run("--now", NOW, "enroll", "J1", "--treatment", "cellulite",
                    "--session-at", SESSION)
    assert "0 message(s) planned" in text.stdout


def test_same_session_written_with_an_offset_is_the_same_session(jane: Clinic) -> None:
    first = _enroll(jane)
    again = jane.json("--now", NOW, "enroll", "J1", "--treatment", "cellulite",
                      "--session-at", "2026-03-07T15:30:00+00:00")
    assert again["session_id"] == first["session_id"]
    assert jane.count("message") == len(first["messages"])


def test_next_session_reminder_needs_a_booked_session(jane: Clinic) -> None:
    steps = {m["step"] for m in _enroll(jane)["messages"]}
    assert "next_session" not in steps
    assert "first_48h" in steps


def test_second_session_continues_the_course(jane: Clinic) -> None:
    first = _enroll(jane, "--next-session-at", "2026-03-21T10:30")
    second = jane.json("--now", "2026-03-21T11:00-04:00", "enroll", "J1", "--treatment",
                       "cellulite", "--session-at", "2026-03-21T10:30")
    assert second["course_id"] == first["course_id"]
    assert jane.rows("SELECT number, status FROM session ORDER BY at") == [
        (1, "completed"), (2, "completed")]
    # The results message is planned once per course, after the first session.
    assert "results" not in {m["step"] for m in second["messages"]}


def test_consented_channels_only(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Sam Roe", "--phone", "+12125550124",
                "--email", "sam@example.com", "--channels", "email", "--ref", "S1")
    out = clinic.json("--now", NOW, "enroll", "S1", "--treatment", "cellulite",
                      "--session-at", SESSION)
    assert {m["channel"] for m in out["messages"]} == {"email"}


def test_late_enrollment_skips_what_is_no_longer_worth_sending(jane: Clinic) -> None:
    # Enrolled three days after the session: the first-evening messages are pointless now.
    out = _enroll(jane, now="2026-03-10T12:00-04:00")
    steps = {m["step"] for m in out["messages"]}
    assert {"first_48h", "arnica", "activity"}.isdisjoint(steps)
    assert {"routine", "results"} <= steps


def test_late_enrollment_still_sends_the_first_message(jane: Clinic) -> None:
    # Enrolled at 23:00 for a 16:00 session: first_48h goes at 09:00, with a full window.
    out = jane.json("--now", "2026-03-05T23:00-05:00", "enroll", "J1", "--treatment",
                    "cellulite", "--session-at", "2026-03-05T16:00")
    first = [m for m in out["messages"] if m["step"] == "first_48h" and m["channel"] == "sms"]
    assert [utc(m["send_after"]) for m in first] == [utc("2026-03-06T09:00-05:00")]
    assert jane.rows(f"SELECT expires_at FROM message WHERE id = {first[0]['id']}") == [
        ("2026-03-07 06:00:00.000000",)]  # 09:00 EST + 16h, stored in UTC


def test_patient_by_numeric_id_and_hash(jane: Clinic) -> None:
    out = jane.json("--now", NOW, "enroll", "#1", "--treatment", "cellulite",
                    "--session-at", SESSION)
    assert out["messages"]
    listed = jane.json("messages", "--patient", "1")
    assert {m["id"] for m in listed} == {m["id"] for m in out["messages"]}
