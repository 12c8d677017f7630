"""Whole courses walked through time: bookings, moves, cancellations, nudges, maintenance.

Staff act through the real CLI at the walk's current time (`--now`); between actions a
dispatcher sends everything that falls due, tick by tick at each next due time, on a
real SQLite file. Each test asserts exactly what was sent when, and what was cancelled why.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aftercare.outbox import next_due
from conftest import Clinic, FixedClock, run_at

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

NEW_YORK = ZoneInfo("America/New_York")
AFTERCARE = (("11:30", 0, "first_48h"), ("14:30", 0, "arnica"), ("10:00", 1, "activity"),
             ("10:30", 2, "check_48h"), ("10:00", 6, "routine"))


def local(text: str) -> datetime:
    """New York wall-clock time as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).astimezone(UTC)


def aftercare(day: str) -> list[tuple[str, str]]:
    """The five messages after a 10:30 session on `day` (local), as (local time, step)."""
    start = date.fromisoformat(day)
    return [(f"{start + timedelta(days=offset)} {clock}", step)
            for clock, offset, step in AFTERCARE]


def every(day: str, days: int, count: int, step: str = "maintenance") -> list[tuple[str, str]]:
    """`count` reminders at 10:00 local, every `days` days after `day`."""
    start = date.fromisoformat(day)
    return [(f"{start + timedelta(days=days * k)} 10:00", f"{step} #{k}")
            for k in range(1, count + 1)]


class Walk:
    """One clinic's days: staff actions at the current time, sends as time passes."""

    def __init__(self, clinic: Clinic, start: str) -> None:
        self.clinic = clinic
        self.clock = FixedClock(local(start))
        self.app = clinic.app(clock=self.clock, console=io.StringIO())
        self.dispatcher = self.app.dispatcher(random.Random(0))

    def at(self, text: str) -> Walk:
        """Let time run to `text` (local), sending whatever falls due on the way."""
        end = local(text)
        assert end >= self.clock.now, "time only moves forward"
        while (due := next_due(self.app.engine)) is not None and due <= end:
            self.clock.now = max(self.clock.now, due)
            run_at(self.dispatcher, self.clock.now)
        self.clock.now = end
        return self

    def do(self, *args: str) -> Any:
        """A staff command now; its JSON output."""
        return self.clinic.json("--now", self.clock.now.isoformat(), *args)

    def run(self, *args: str) -> str:
        result = self.clinic.run("--now", self.clock.now.isoformat(), *args)
        assert result.exit_code == 0, result.output + result.stderr
        return result.stdout

    def _rows(self, where: str, time_column: str) -> list[tuple[str, str, str | None]]:
        rows = self.clinic.rows(f"SELECT {time_column}, step, occurrence, last_error "
                                f"FROM message WHERE {where} ORDER BY {time_column}, id")
        return [(f"{_local(moment):%Y-%m-%d %H:%M}",
                 f"{step} #{occurrence}" if step == "maintenance" else step, error)
                for moment, step, occurrence, error in rows]

    def sent(self, channel: str = "sms") -> list[tuple[str, str]]:
        """(local send time, step) of every message sent on `channel`, in order."""
        return [(when, step) for when, step, _ in
                self._rows(f"status = 'sent' AND channel = '{channel}'", "sent_at")]

    def cancelled(self, channel: str = "sms") -> list[tuple[str, str, str | None]]:
        """(local planned time, step, reason) of every cancelled message on `channel`."""
        return self._rows(f"status = 'cancelled' AND channel = '{channel}'", "send_after")

    def statuses(self) -> dict[str, int]:
        return dict(self.clinic.rows("SELECT status, count(*) FROM message GROUP BY status"))


def _local(stored: str) -> datetime:
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).astimezone(NEW_YORK)


def _in_order(sent: list[tuple[str, str]]) -> None:
    assert [when for when, _ in sent] == sorted(when for when, _ in sent)


def _only(sent: Iterable[tuple[str, str]], *steps: str) -> list[tuple[str, str]]:
    return [(when, step) for when, step in sent if step.split(" #")[0] in steps]


def _sms_patient(walk: Walk, ref: str = "J1") -> None:
    walk.do("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--ref", ref)


def test_six_session_cellulite_course_with_a_reschedule_and_a_cancellation(
        clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-06-01T11:00")
    _sms_patient(walk)
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30",
            "--next-session-at", "2026-06-08T10:30")
    # Session 2 moves from Monday 8 to Wednesday 10 June: its reminders move with it.
    walk.at("2026-06-05T12:00")
    moved = walk.do("session", "reschedule", "2", "--at", "2026-06-10T10:30")
    assert moved == {"id": 2, "number": 2, "at": "2026-06-10T14:30:00+00:00",
                     "status": "booked", "checkin": None, "flag": None}
    walk.at("2026-06-10T11:00")
    done = walk.do("session", "complete", "2")
    assert (done["id"], done["status"]) == (2, "completed")
    # Session 3 booked, then cancelled: its reminders go, the rebooking nudge comes back.
    walk.at("2026-06-12T12:00")
    third = walk.do("session", "book", "J1", "--at", "2026-06-18T15:00")
    assert (third["number"], third["status"]) == (3, "booked")
    walk.at("2026-06-15T12:00")
    walk.do("session", "cancel", str(third["id"]), "--reason", "travelling")
    # The nudge on 17 June works: the patient books for the 19th.
    walk.at("2026-06-17T12:00")
    rebooked = walk.do("session", "book", "J1", "--at", "2026-06-19T10:30")
    assert rebooked["number"] == 3
    walk.at("2026-06-19T11:00")
    walk.do("session", "complete", str(rebooked["id"]))
    walk.do("session", "book", "J1", "--at", "2026-06-26T10:30")
    for day, following in (("06-26", "07-03"), ("07-03", "07-10")):
        walk.at(f"2026-{day}T11:00")
        walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", f"2026-{day}T10:30",
                "--next-session-at", f"2026-{following}T10:30")
    walk.at("2026-07-10T11:00")
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-07-10T10:30")
    walk.at("2027-07-31T12:00")

    expected = [
        *aftercare("2026-06-01"),
        ("2026-06-08 10:00", "next_session"), ("2026-06-09 10:30", "session_reminder"),
        *aftercare("2026-06-10"),
        ("2026-06-17 10:00", "rebook"),
        # Booked two days ahead: the preparation message goes at once.
        ("2026-06-17 12:00", "next_session"), ("2026-06-18 10:30", "session_reminder"),
        *aftercare("2026-06-19"),
        ("2026-06-24 10:00", "next_session"), ("2026-06-25 10:30", "session_reminder"),
        *aftercare("2026-06-26"),
        ("2026-07-01 10:00", "next_session"), ("2026-07-02 10:30", "session_reminder"),
        *aftercare("2026-07-03"),
        ("2026-07-08 10:00", "next_session"), ("2026-07-09 10:30", "session_reminder"),
        *aftercare("2026-07-10"),
        ("2026-07-13 10:00", "results"),  # six weeks after session 1
        # After the sixth session: every 35 days three times, then every 75 days, for a year.
        *every("2026-07-10", 35, 3),
        ("2027-01-06 10:00", "maintenance #4"), ("2027-03-22 10:00", "maintenance #5"),
        ("2027-06-05 10:00", "maintenance #6"),
    ]
    sent = walk.sent()
    _in_order(sent)
    assert sorted(sent) == sorted(expected)
    assert walk.cancelled() == [
        ("2026-06-16 10:00", "next_session", "session 3 cancelled"),
        ("2026-06-17 15:00", "session_reminder", "session 3 cancelled"),
        ("2026-06-24 10:00", "rebook_follow_up", "session 3 booked"),
        ("2026-06-26 10:00", "rebook", "session 4 booked"),
        ("2026-07-03 10:00", "rebook_follow_up", "session 4 booked"),
    ]
    assert walk.statuses() == {"sent": len(expected), "cancelled": 5}
    course = walk.do("course", "show", "1")
    assert course["status"] == "completed"
    assert [(s["number"], s["status"]) for s in course["sessions"]] == [
        (1, "completed"), (2, "completed"), (3, "cancelled"), (3, "completed"),
        (4, "completed"), (5, "completed"), (6, "completed")]
    # The move is in the history, with the reminders it carried.
    moves = clinic.rows("SELECT detail FROM event WHERE kind = 'message.moved'")
    assert moves == [("next_session/sms: session 2 rescheduled",),
                     ("session_reminder/sms: session 2 rescheduled",)]


def test_patient_who_never_rebooks_gets_a_nudge_a_follow_up_then_silence(
        clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-06-01T11:00")
    _sms_patient(walk)
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30")
    walk.at("2026-12-31T12:00")
    assert walk.sent() == [
        *aftercare("2026-06-01"),
        ("2026-06-08 10:00", "rebook"),  # the ideal 7 days after the session
        ("2026-06-15 10:00", "rebook_follow_up"),  # once more, a week later
        ("2026-07-13 10:00", "results"),
    ]
    assert walk.cancelled() == []
    assert walk.statuses() == {"sent": 8}  # nothing left pending: silence


def test_course_spacing_set_at_enrollment_times_the_nudge(clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-06-01T11:00")
    _sms_patient(walk)
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30",
            "--spacing-days", "10")
    walk.at("2026-06-30T12:00")
    assert _only(walk.sent(), "rebook", "rebook_follow_up") == [
        ("2026-06-11 10:00", "rebook"), ("2026-06-18 10:00", "rebook_follow_up")]


def test_hyaluronic_acid_maintenance_over_a_year_moves_on_from_a_booked_session(
        clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-01-05T11:00")
    _sms_patient(walk)
    walk.do("enroll", "J1", "--treatment", "hyaluronic-acid", "--session-at",
            "2026-01-05T10:30")
    assert walk.do("course", "show", "1")["status"] == "completed"  # a one-session course
    # Monthly reminders; after the third, the patient books and comes.
    walk.at("2026-04-01T12:00")
    booked = walk.do("session", "book", "J1", "--at", "2026-04-08T10:30")
    walk.at("2026-04-08T11:00")
    walk.do("session", "complete", str(booked["id"]))
    walk.at("2027-01-05T12:00")
    reminders = ["maintenance", "next_session", "session_reminder"]
    assert _only(walk.sent(), *reminders) == [
        *every("2026-01-05", 28, 3),
        ("2026-04-06 10:00", "next_session"), ("2026-04-07 10:30", "session_reminder"),
        *every("2026-04-08", 28, 9)]  # 9 x 28 days fit before 5 January 2027
    assert {step for _, step in walk.sent()} - set(reminders) - {
        f"maintenance #{k}" for k in range(1, 14)} == {
        "first_48h", "arnica", "activity", "check_48h", "routine", "results"}
    # The first series was dropped from its fourth reminder on, the day of the booking.
    assert walk.cancelled() == [(when, step, "session 2 booked")
                                for when, step in every("2026-01-05", 28, 13)[3:]]
    # The second series runs on to a year after the session: the horizon.
    pending = walk._rows("status = 'pending' AND channel = 'sms'", "send_after")
    assert [(when, step) for when, step, _ in pending] == every("2026-04-08", 28, 13)[9:]


def test_mesobotox_maintenance_every_three_months_restarts_from_a_walk_in(
        clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-01-05T11:00")
    _sms_patient(walk)
    walk.do("enroll", "J1", "--treatment", "mesobotox", "--session-at", "2026-01-05T10:30")
    # She comes in two weeks after the first reminder without a booking.
    walk.at("2026-04-13T11:00")
    walk.do("enroll", "J1", "--treatment", "mesobotox", "--session-at", "2026-04-13T10:30")
    walk.at("2027-01-05T12:00")
    assert _only(walk.sent(), "maintenance") == [
        *every("2026-01-05", 84, 1), *every("2026-04-13", 84, 3)]
    assert walk.cancelled() == [(when, step, "session 2 completed")
                                for when, step in every("2026-01-05", 84, 4)[1:]]


def test_opt_out_mid_course_stops_that_channel_only(clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-06-01T11:00")
    walk.do("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--email",
            "jane@example.com", "--ref", "J1")
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-01T10:30",
            "--next-session-at", "2026-06-08T10:30")
    walk.at("2026-06-02T12:00")
    assert "5 cancelled" in walk.run("patient", "opt-out", "J1", "--channel", "sms")
    walk.at("2026-06-08T11:00")
    walk.do("enroll", "J1", "--treatment", "cellulite", "--session-at", "2026-06-08T10:30")
    walk.at("2026-06-20T12:00")
    assert walk.sent("sms") == aftercare("2026-06-01")[:3]
    reason = "patient opted out of sms"
    assert walk.cancelled("sms") == [
        ("2026-06-03 10:30", "check_48h", reason), ("2026-06-06 10:00", "next_session", reason),
        ("2026-06-07 10:00", "routine", reason), ("2026-06-07 10:30", "session_reminder", reason),
        ("2026-07-13 10:00", "results", reason)]
    assert walk.sent("email") == [
        *aftercare("2026-06-01")[:4],
        ("2026-06-06 10:00", "next_session"), ("2026-06-07 10:00", "routine"),
        ("2026-06-07 10:30", "session_reminder"),
        *aftercare("2026-06-08"), ("2026-06-15 10:00", "rebook")]
    shown = walk.do("patient", "show", "J1")
    assert shown["opted_out"]["sms"] is not None and shown["opted_out"]["email"] is None
    assert shown["reachable"] == {"sms": False, "email": True}


def test_forgotten_patient_keeps_only_anonymous_counts(clinic: Clinic) -> None:
    walk = Walk(clinic, "2026-06-01T11:00")
    walk.do("patient", "add", "--name", "Zelda Quux", "--phone", "+12125550199", "--email",
            "zelda.quux@example.com", "--ref", "ZQ-77")
    walk.do("enroll", "ZQ-77", "--treatment", "cellulite", "--session-at",
            "2026-06-01T10:30", "--next-session-at", "2026-06-08T10:30")
    walk.do("session", "cancel", "2", "--reason", "Zelda called from +12125550199")
    walk.at("2026-06-03T12:00")
    sent_before = walk.sent("sms") + walk.sent("email")
    assert len(sent_before) == 8 and clinic.count("message") == 20
    out = walk.run("patient", "forget", "ZQ-77")
    assert "8 pending message(s) cancelled" in out  # routine, rebook, follow-up, results
    walk.at("2026-12-31T12:00")
    # Nothing more went out; every row is still there for the counts.
    assert walk.sent("sms") + walk.sent("email") == sent_before
    assert walk.statuses() == {"sent": 8, "cancelled": 12}
    assert clinic.rows("SELECT name, ref, phone, email FROM patient") == [
        ("(forgotten)", None, None, None)]
    assert clinic.rows("SELECT count(*) FROM message WHERE body IS NOT NULL OR subject IS NOT "
                       "NULL OR provider_id IS NOT NULL OR last_error IS NOT NULL") == [(0,)]
    assert clinic.rows("SELECT count(*) FROM event WHERE detail != ''") == [(0,)]
    # Not in the database file, its log, or anything staff can print.
    raw = b"".join(path.read_bytes() for path in clinic.folder.glob("clinic.db*"))
    for secret in (b"Zelda", b"5550199", b"zelda.quux", b"ZQ-77"):
        assert secret not in raw
    timeline = walk.run("timeline", "#1") + walk.run("messages")
    assert "Zelda" not in timeline and "5550199" not in timeline
    assert "0 pending message(s) cancelled" in walk.run("patient", "forget", "#1")
