"""The booking, course and patient commands: JSON shapes, plans kept true, bad input refused."""

from __future__ import annotations

import io

import pytest

from conftest import Clinic, run_at, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

NOW = "2026-06-01T11:00-04:00"


@pytest.fixture
def jane(clinic: Clinic) -> Clinic:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                "--email", "jane@example.com", "--ref", "J1")
    clinic.json("--now", NOW, "enroll", "J1", "--treatment", "cellulite", "--session-at",
                "2026-06-01T10:30", "--next-session-at", "2026-06-08T10:30")
    return clinic


def _snapshot(clinic: Clinic) -> list[object]:
    return [clinic.rows(f"SELECT * FROM {table} ORDER BY id")
            for table in ("patient", "course", "session", "message", "event")]


def _pending(clinic: Clinic, channel: str = "sms") -> dict[str, str]:
    return dict(clinic.rows(f"SELECT step, send_after FROM message WHERE status = 'pending' "
                            f"AND channel = '{channel}'"))


def test_session_commands_print_the_session_object(jane: Clinic) -> None:
    booked = jane.json("--now", NOW, "session", "book", "J1", "--at", "2026-06-15T09:00")
    assert booked == {"id": 3, "number": 3, "at": "2026-06-15T13:00:00+00:00",
                      "status": "booked", "checkin": None, "flag": None}
    moved = jane.json("--now", NOW, "session", "reschedule", "3", "--at", "2026-06-16T09:00")
    assert moved["at"] == "2026-06-16T13:00:00+00:00" and moved["status"] == "booked"
    cancelled = jane.json("--now", NOW, "session", "cancel", "3", "--reason", "ill")
    assert cancelled == {"id": 3, "number": 3, "at": "2026-06-16T13:00:00+00:00",
                         "status": "cancelled", "checkin": None, "flag": None}
    completed = jane.json("--now", "2026-06-08T11:00-04:00", "session", "complete", "2")
    assert completed == {"id": 2, "number": 2, "at": "2026-06-08T14:30:00+00:00",
                         "status": "completed", "checkin": None, "flag": None}
    course = jane.json("course", "show", "1")
    assert set(course) == {"id", "treatment", "status", "sessions"}
    assert (course["id"], course["treatment"], course["status"]) == (1, "cellulite", "active")
    assert [set(s) for s in course["sessions"]] == [
        {"id", "number", "at", "status", "checkin", "flag"}] * 3


def test_completing_twice_changes_nothing(jane: Clinic) -> None:
    jane.json("--now", "2026-06-08T11:00-04:00", "session", "complete", "2")
    before = _snapshot(jane)
    jane.json("--now", "2026-06-08T11:05-04:00", "session", "complete", "2")
    assert _snapshot(jane) == before


def test_booking_the_same_time_twice_books_once(jane: Clinic) -> None:
    jane.json("--now", NOW, "session", "book", "J1", "--at", "2026-06-15T09:00")
    before = _snapshot(jane)
    again = jane.json("--now", NOW, "session", "book", "J1", "--at", "2026-06-15T09:00")
    assert again["id"] == 3 and _snapshot(jane) == before


def test_no_show_plans_a_rebooking_nudge(jane: Clinic) -> None:
    assert "rebook" not in _pending(jane)
    out = jane.run("--now", "2026-06-08T12:00-04:00", "session", "no-show", "2")
    assert out.exit_code == 0 and "Marked missed" in out.stdout
    # Due on 8 June (7 days after session 1), held from the past to now, valid 3 days.
    assert _pending(jane)["rebook"] == "2026-06-08 16:00:00.000000"
    assert jane.rows("SELECT status FROM session WHERE id = 2") == [("no_show",)]


def test_withdrawing_a_course_cancels_everything_pending_and_its_bookings(jane: Clinic) -> None:
    out = jane.run("--now", NOW, "course", "withdraw", "1", "--reason", "moved abroad")
    assert out.exit_code == 0 and "16 cancelled" in out.stdout
    assert jane.rows("SELECT DISTINCT status FROM message") == [("cancelled",)]
    assert jane.rows("SELECT status FROM session ORDER BY id") == [("completed",),
                                                                   ("cancelled",)]
    assert jane.rows("SELECT detail FROM event WHERE kind = 'course.withdrawn'") == [
        ("moved abroad",)]
    # A later session of the same treatment starts a new course.
    later = jane.json("--now", "2026-09-01T11:00-04:00", "enroll", "J1", "--treatment",
                      "cellulite", "--session-at", "2026-09-01T10:30")
    assert later["course_id"] == 2


def test_new_time_zone_moves_unsent_messages_and_leaves_sent_ones(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:30-04:00", "send-due")
    before = _pending(jane)
    assert before["activity"] == "2026-06-02 14:00:00.000000"  # 10:00 in New York
    shown = jane.json("--now", "2026-06-01T12:00-04:00", "patient", "update", "J1",
                      "--timezone", "Europe/Paris")
    assert shown["timezone"] == "Europe/Paris"
    after = _pending(jane)
    assert after["activity"] == "2026-06-02 08:00:00.000000"  # 10:00 in Paris
    assert after["check_48h"] == before["check_48h"]  # 48 hours after is 48 hours after
    assert jane.rows("SELECT status, sent_at FROM message WHERE step = 'first_48h' "
                     "AND channel = 'sms'") == [("sent", "2026-06-01 15:30:00.000000")]
    assert jane.rows("SELECT detail FROM event WHERE kind = 'patient.updated'") == [
        ("timezone",)]


def test_a_corrected_phone_number_brings_sms_back(jane: Clinic) -> None:
    jane.rows("UPDATE patient SET phone_invalid_at = '2026-06-01 15:00:00'")
    jane.json("--now", NOW, "patient", "update", "J1", "--name", "Jane Doe-Smith")
    assert "routine" not in _pending(jane)  # the number is still marked invalid
    jane.json("--now", NOW, "patient", "update", "J1", "--phone", "+1 212 555 0124")
    assert "routine" in _pending(jane)
    assert jane.rows("SELECT phone, phone_invalid_at FROM patient") == [("+12125550124", None)]


def test_opt_out_then_back_in(jane: Clinic) -> None:
    out = jane.run("--now", NOW, "patient", "opt-out", "J1", "--channel", "email")
    assert out.exit_code == 0
    assert _pending(jane, "email") == {}
    assert jane.json("patient", "show", "J1")["opted_out"]["email"] is not None
    jane.run("--now", NOW, "patient", "opt-in", "J1", "--channel", "email")
    assert set(_pending(jane, "email")) == set(_pending(jane, "sms"))


def test_patient_show_json(jane: Clinic) -> None:
    shown = jane.json("patient", "show", "J1")
    assert shown["channels"] == ["sms", "email"]
    assert shown["opted_out"] == {"sms": None, "email": None}
    assert (shown["name"], shown["phone"], shown["email"], shown["ref"]) == (
        "Jane Doe", "+12125550123", "jane@example.com", "J1")
    assert shown["courses"] == [{"id": 1, "treatment": "cellulite", "status": "active"}]


def test_timeline_reads_at_a_glance(jane: Clinic) -> None:
    jane.json("--now", "2026-06-01T11:30-04:00", "send-due")
    out = jane.run("--now", "2026-06-01T12:00-04:00", "timeline", "J1").stdout
    lines = out.splitlines()
    now_line = next(i for i, line in enumerate(lines) if "now:" in line)
    first = next(i for i, line in enumerate(lines) if "first_48h" in line)
    booked = next(i for i, line in enumerate(lines) if "session 2" in line)
    assert first < now_line < booked
    assert "sms+email sent" in lines[first] and "booked" in lines[booked]
    data = jane.json("timeline", "J1")
    assert [e["kind"] for e in data["entries"]].count("session") == 2


@pytest.mark.parametrize(("args", "message"), [
    (("session", "book", "J1", "--at", "2026-05-30T10:00"), "error: at: is in the past"),
    (("session", "book", "J1", "--at", "tomorrow"), "error: at: 'tomorrow' is not an ISO"),
    (("session", "book", "J1", "--at", "2026-06-20T10:00", "--course", "9"),
     "error: course: no course with id 9"),
    (("session", "book", "NOPE", "--at", "2026-06-20T10:00"), "error: patient: no patient"),
    (("session", "book", "J1", "--at", "2026-06-20T10:00", "--treatment", "botox"),
     "error: treatment: unknown treatment 'botox'"),
    (("session", "reschedule", "1", "--at", "2026-06-20T10:00"),
     "error: session: session 1 is completed; only a booked session can reschedule"),
    (("session", "reschedule", "2", "--at", "2026-05-20T10:00"), "error: at: is in the past"),
    (("session", "cancel", "77"), "error: session: no session with id 77"),
    (("session", "complete", "2"), "error: session: session 2 is booked for"),
    (("session", "no-show", "2"), "error: session: session 2 has not started yet"),
    (("course", "show", "5"), "error: course: no course with id 5"),
    (("course", "withdraw", "5"), "error: course: no course with id 5"),
    (("patient", "update", "J1", "--phone", "12"), "error: phone: '12' is not a valid phone"),
    (("patient", "update", "J1", "--timezone", "Mars/Base"), "error: timezone: 'Mars/Base'"),
    (("patient", "update", "J1", "--locale", "de"), "error: locale: 'de' has no message"),
    (("patient", "update", "J1", "--email", ""),
     "error: channels: email needs an address"),
    (("patient", "show", "J9"), "error: patient: no patient with id or ref 'J9'"),
    (("timeline", "J9"), "error: patient: no patient with id or ref 'J9'"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(jane: Clinic, args: tuple[str, ...],
                                                          message: str) -> None:
    before = _snapshot(jane)
    result = jane.run("--now", NOW, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(jane) == before


def test_opt_out_needs_a_known_channel(jane: Clinic) -> None:
    before = _snapshot(jane)
    result = jane.run("patient", "opt-out", "J1", "--channel", "fax")
    assert result.exit_code == 2 and "'fax' is not one of" in result.stderr
    assert _snapshot(jane) == before


def test_book_needs_a_course_choice_when_there_are_several(jane: Clinic) -> None:
    jane.json("--now", NOW, "enroll", "J1", "--treatment", "mesobotox", "--session-at",
              "2026-06-01T10:00")
    result = jane.run("--now", NOW, "session", "book", "J1", "--at", "2026-06-20T10:00")
    assert result.exit_code == 2
    assert result.stderr == "error: course: patient 1 has several courses (1, 2); give --course\n"
    booked = jane.json("--now", NOW, "session", "book", "J1", "--at", "2026-06-20T10:00",
                       "--course", "2")
    assert jane.rows(f"SELECT course_id FROM session WHERE id = {booked['id']}") == [(2,)]


def test_first_session_booked_before_any_visit(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Ana Diaz", "--phone", "+12125550126", "--ref", "A1")
    booked = clinic.json("--now", NOW, "session", "book", "A1", "--at", "2026-06-10T10:30",
                         "--treatment", "cellulite")
    assert (booked["number"], booked["status"]) == (1, "booked")
    assert set(_pending(clinic)) == {"next_session", "session_reminder"}
    # The reminder of a first visit has no "bruising from last time".
    counts = run_at(clinic.app(console=io.StringIO()).dispatcher(), utc("2026-06-08T10:00-04:00"))
    assert counts.sent == 1
    body = clinic.rows("SELECT body FROM message WHERE status = 'sent'")[0][0]
    assert "last time" not in body and "Ana" in body
