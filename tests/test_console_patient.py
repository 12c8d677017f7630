"""The patient page: contact and consent, courses and sessions with their actions, the
timeline, the conversation with its reply box, the history, and forget."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event

from aftercare.bookings import book
from aftercare.history import record
from aftercare.models import Patient, Session
from aftercare.notices import queue_staff_reply
from aftercare.replies import Incoming, settle, store
from conftest import Clinic
from console_kit import EMAILS, Console, console

__all__ = ["console"]

NOW = "2026-12-01T10:00"  # the console's fixed clock, in the clinic's time zone (New York)
PHONE = "+12125550123"


def _tables(clinic: Clinic) -> list[object]:
    """Everything an action could change (staff sessions aside: they carry flash lines)."""
    return [clinic.rows(f"SELECT * FROM {table} ORDER BY id")
            for table in ("patient", "course", "session", "message", "event", "notice", "reply")]


@pytest.fixture
def jane(console: Console, clinic: Clinic) -> Console:
    """Jane: had session 1 a week ago; session 2, booked at 09:30 today, has taken place."""
    added = clinic.run("patient", "add", "--name", "Jane Doe", "--phone", PHONE,
                       "--email", "jane@example.com", "--ref", "J1")
    assert added.exit_code == 0, added.output
    enrolled = clinic.run("--now", NOW, "enroll", "J1", "--treatment", "cellulite",
                          "--session-at", "2026-11-24T09:00",
                          "--next-session-at", "2026-12-01T09:30")
    assert enrolled.exit_code == 0, enrolled.output + enrolled.stderr
    return console


def _actors(clinic: Clinic, kind: str) -> list[str]:
    return [row[0] for row in clinic.rows(f"SELECT actor FROM event WHERE kind = '{kind}'")]


def _book(console: Console, at: str = "2026-12-08T11:00") -> int:
    """Book a session through the page; its id."""
    answer = console.post("/patients/1/book", {"form": "book", "course": "1", "at": at})
    assert answer.status_code == 303, answer.text
    return int(console.clinic.rows("SELECT max(id) FROM session")[0][0])


def test_the_page_shows_every_section(jane: Console) -> None:
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1")
    assert page.status_code == 200
    for heading in ("Contact and consent", "Courses and sessions", "Messages", "Conversation",
                    "History"):
        assert f">{heading}</h2>" in page.text
    assert "Jane Doe" in page.text and "jane@example.com" in page.text
    assert 'href="/enroll?patient=1"' in page.text
    for label in ("Reply by SMS", "Date and time of the next session", "Opt out of SMS",
                  "Opt out of email"):
        assert label in page.text
    assert ">Send reply<" in page.text and ">Book session<" in page.text
    assert "Forget this patient" not in page.text  # admin only
    # The timeline: cellulite's first step, with its status, and the "now" line.
    assert "Now: 1 Dec 2026, 10:00 EST" in page.text
    assert 'class="badge pending">planned<' in page.text


def test_unknown_patient_is_404(jane: Console) -> None:
    jane.sign_in("frontdesk")
    assert jane.get("/patients/99").status_code == 404
    assert jane.post("/patients/99/details", {"name": "X"}).status_code == 404
    assert jane.post("/sessions/99/cancel").status_code == 404
    assert jane.post("/courses/99/withdraw").status_code == 404


def test_patient_data_is_escaped(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/patients/1/details", {
        "form": "details", "name": "<script>alert(1)</script>", "phone": PHONE,
        "email": "jane@example.com", "ref": "J1", "locale": "en",
        "timezone": "America/New_York", "channel_sms": "1", "channel_email": "1"})
    assert answer.status_code == 303, answer.text
    jane.post("/patients/1/reply", {"text": "<b>bold</b> & more"})
    page = jane.get("/patients/1")
    assert "<script>alert(1)</script>" not in page.text and "<b>bold</b>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in page.text


def test_details_are_saved_by_the_staff_member(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/patients/1/details", {
        "form": "details", "name": "Jane Smith", "phone": "+1 212 555 0199", "email": "",
        "ref": "J1", "locale": "en", "timezone": "America/Chicago", "channel_sms": "1"})
    assert answer.status_code == 303, answer.text
    assert "Details saved." in jane.follow(answer).text
    assert clinic.rows("SELECT name, phone, email, timezone, channels FROM patient") == [
        ("Jane Smith", "+12125550199", None, "America/Chicago", "sms")]
    assert _actors(clinic, "patient.updated") == [EMAILS["frontdesk"]]


@pytest.mark.parametrize("changes, field, problem", [
    ({"phone": "12"}, "phone", "not a valid phone number"),
    ({"name": ""}, "name", "must not be empty"),
    ({"timezone": "Mars/Base"}, "timezone", "not an IANA time zone"),
    ({"email": ""}, "channels", "email needs an address"),  # email still ticked
    ({"channel_sms": "", "channel_email": ""}, "channels", "is not valid"),
])
def test_bad_details_change_nothing(jane: Console, clinic: Clinic, changes: dict[str, str],
                                    field: str, problem: str) -> None:
    jane.sign_in("frontdesk")
    before = _tables(clinic)
    form = {"form": "details", "name": "Jane Doe", "phone": PHONE, "email": "jane@example.com",
            "ref": "J1", "locale": "en", "timezone": "America/New_York", "channel_sms": "1",
            "channel_email": "1", **changes}
    # An unticked box is not posted at all.
    answer = jane.post("/patients/1/details", {k: v for k, v in form.items()
                                               if v or not k.startswith("channel_")})
    assert answer.status_code == 400
    assert f'id="e-{field}"' in answer.text and problem in answer.text
    assert _tables(clinic) == before


def test_opt_out_and_back_in_per_channel(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    out = jane.post("/patients/1/consent", {"channel": "sms", "choice": "out"})
    assert out.status_code == 303
    page = jane.follow(out).text
    assert "The patient is opted out of SMS." in page
    assert "Opted out on 1 Dec 2026, 10:00 EST." in page and "Opt in to SMS" in page
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    assert jane.post("/patients/1/consent", {"channel": "sms", "choice": "in"}).status_code == 303
    assert clinic.rows("SELECT sms_opted_out_at FROM patient") == [(None,)]
    assert _actors(clinic, "patient.opted_out") == [EMAILS["frontdesk"]]
    assert _actors(clinic, "patient.opted_in") == [EMAILS["frontdesk"]]


def test_bad_consent_changes_nothing(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    before = _tables(clinic)
    answer = jane.post("/patients/1/consent", {"channel": "fax", "choice": "out"})
    assert answer.status_code == 400 and 'id="f-consent"' in answer.text
    assert _tables(clinic) == before


def test_an_invalid_number_shows_why_sms_is_closed(jane: Console, clinic: Clinic) -> None:
    clinic.rows("UPDATE patient SET phone_invalid_at = '2026-11-30 15:00:00.000000'")
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    assert "The number was reported invalid on 30 Nov 2026, 10:00 EST." in page
    assert 'class="badge failed">closed<' in page


def test_book_a_session(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/patients/1/book", {"form": "book", "course": "1",
                                            "at": "2026-12-08T11:00"})
    assert answer.status_code == 303, answer.text
    assert "Session booked for 8 Dec 2026, 11:00 EST." in jane.follow(answer).text
    # The datetime-local value is the clinic's time: 11:00 in New York is 16:00 UTC.
    assert clinic.rows("SELECT at, status FROM session WHERE id = 3") == [
        ("2026-12-08 16:00:00.000000", "booked")]
    assert _actors(clinic, "session.booked") == ["cli", EMAILS["frontdesk"]]  # cli: enroll


def test_book_a_new_course_of_a_treatment(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/patients/1/book", {"form": "book", "course": "new:mesobotox",
                                            "at": "2026-12-10T09:00"})
    assert answer.status_code == 303, answer.text
    assert clinic.rows("SELECT treatment FROM course ORDER BY id") == [("cellulite",),
                                                                       ("mesobotox",)]


@pytest.mark.parametrize("at, field, problem", [
    ("next tuesday", "at", "is not an ISO 8601 time"),
    ("", "at", "Choose a date and a time."),
    ("2026-11-30T09:00", "at", "is in the past"),
])
def test_bad_booking_time_changes_nothing(jane: Console, clinic: Clinic, at: str, field: str,
                                          problem: str) -> None:
    jane.sign_in("frontdesk")
    before = _tables(clinic)
    answer = jane.post("/patients/1/book", {"form": "book", "course": "1", "at": at})
    assert answer.status_code == 400
    assert f'id="e-{field}"' in answer.text and problem in answer.text
    assert f'value="{at}"' in answer.text  # what was typed stays in the field
    assert _tables(clinic) == before


@pytest.mark.parametrize("course", ["new:botox", "", "2"])
def test_booking_without_a_valid_course_shows_next_to_the_course(jane: Console, clinic: Clinic,
                                                                 course: str) -> None:
    clinic.run("patient", "add", "--name", "Ann Other", "--phone", "+12125550155")
    jane.sign_in("frontdesk")
    before = _tables(clinic)
    answer = jane.post("/patients/1/book", {"form": "book", "course": course,
                                            "at": "2026-12-08T11:00"})
    assert answer.status_code == 400 and 'id="e-course"' in answer.text
    assert _tables(clinic) == before


def test_a_patient_without_a_course_chooses_a_treatment(jane: Console, clinic: Clinic) -> None:
    clinic.run("patient", "add", "--name", "Ann Other", "--phone", "+12125550155")
    jane.sign_in("frontdesk")
    page = jane.get("/patients/2").text
    assert '<option value="" selected>Choose a treatment</option>' in page
    assert "No course yet." in page


def test_reschedule_a_session(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    sid = _book(jane)
    answer = jane.post(f"/sessions/{sid}/reschedule", {"form": f"at-{sid}",
                                                       "at": "2026-12-09T14:15"})
    assert answer.status_code == 303, answer.text
    assert "Session moved to 9 Dec 2026, 14:15 EST." in jane.follow(answer).text
    assert clinic.rows(f"SELECT at FROM session WHERE id = {sid}") == [
        ("2026-12-09 19:15:00.000000",)]
    assert _actors(clinic, "session.rescheduled") == [EMAILS["frontdesk"]]


def test_bad_reschedule_shows_next_to_that_session(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    sid = _book(jane)
    before = _tables(clinic)
    answer = jane.post(f"/sessions/{sid}/reschedule", {"form": f"at-{sid}", "at": "soon"})
    assert answer.status_code == 400
    assert f'id="e-at-{sid}"' in answer.text and "is not an ISO 8601 time" in answer.text
    assert f'aria-invalid="true" aria-describedby="e-at-{sid}"' in answer.text
    assert 'value="soon"' in answer.text and "<details open>" in answer.text
    assert _tables(clinic) == before


def test_cancel_a_session_with_a_reason(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    sid = _book(jane)
    answer = jane.post(f"/sessions/{sid}/cancel", {"reason": "ill"})
    assert answer.status_code == 303
    page = jane.follow(answer).text
    assert "Session cancelled." in page
    assert clinic.rows(f"SELECT status FROM session WHERE id = {sid}") == [("cancelled",)]
    assert clinic.rows("SELECT detail, actor FROM event WHERE kind = 'session.cancelled'") == [
        ("session 3: ill", EMAILS["frontdesk"])]
    # The timeline says why its reminders were cancelled.
    assert "session 3 cancelled" in page


def test_cancelling_a_session_twice_answers_400(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    sid = _book(jane)
    jane.post(f"/sessions/{sid}/cancel", {"reason": "ill"})
    before = _tables(clinic)
    answer = jane.post(f"/sessions/{sid}/cancel", {"reason": "again"})
    assert answer.status_code == 400
    assert f'id="f-session-{sid}"' in answer.text and "only a booked session" in answer.text
    assert _tables(clinic) == before


def test_complete_a_session_that_took_place(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    assert "/sessions/2/complete" in page and "/sessions/2/no-show" in page
    answer = jane.post("/sessions/2/complete")
    assert answer.status_code == 303, answer.text
    assert "its aftercare is planned" in jane.follow(answer).text
    assert clinic.rows("SELECT status FROM session WHERE id = 2") == [("completed",)]
    assert EMAILS["frontdesk"] in _actors(clinic, "session.completed")


def test_a_session_still_to_come_cannot_be_completed(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    sid = _book(jane)
    assert f"/sessions/{sid}/complete" not in jane.get("/patients/1").text
    before = _tables(clinic)
    answer = jane.post(f"/sessions/{sid}/complete")
    assert answer.status_code == 400 and "once it has taken place" in answer.text
    assert _tables(clinic) == before


def test_no_show(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/sessions/2/no-show")
    assert answer.status_code == 303
    assert "Session marked as a no-show." in jane.follow(answer).text
    assert clinic.rows("SELECT status FROM session WHERE id = 2") == [("no_show",)]
    assert _actors(clinic, "session.no_show") == [EMAILS["frontdesk"]]


def test_withdraw_a_course(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/courses/1/withdraw", {"reason": "moved abroad"})
    assert answer.status_code == 303
    page = jane.follow(answer).text
    assert "Course withdrawn" in page and "Withdraw course" not in page
    assert clinic.rows("SELECT status FROM course") == [("withdrawn",)]
    assert clinic.rows("SELECT detail, actor FROM event WHERE kind = 'course.withdrawn'") == [
        ("moved abroad", EMAILS["frontdesk"])]


def test_the_bruising_check_in_and_its_flag_show(jane: Console, clinic: Clinic) -> None:
    sid = 2
    with jane.app.db() as db:
        session = db.get(Session, sid)
        assert session is not None
        session.checkin, session.checkin_at = "bruising: still_there", jane.clock()
        session.flag = "bruising not gone: call the patient to move this session"
        db.add(session)
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    assert "Answer: bruising: still there" in page
    assert "Call the patient:" in page
    assert "bruising not gone: call the patient to move this session" in page


def test_reply_by_sms(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    answer = jane.post("/patients/1/reply", {"form": "reply", "text": "See you Tuesday!"})
    assert answer.status_code == 303 and answer.headers["location"].endswith("#conversation")
    page = jane.follow(answer).text
    assert "Reply sent." in page
    assert "See you Tuesday!" in page
    assert f'Reply by <span title="{EMAILS["frontdesk"]}">Fran Desk</span>' in page
    assert clinic.rows("SELECT kind, status, staff, to_address FROM notice") == [
        ("staff_reply", "sent", EMAILS["frontdesk"], PHONE)]
    assert _actors(clinic, "reply.sent") == [EMAILS["frontdesk"]]


def test_reply_to_a_patient_who_cannot_get_sms(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    jane.post("/patients/1/consent", {"channel": "sms", "choice": "out"})
    assert "This patient cannot get SMS now" in jane.get("/patients/1").text
    before = _tables(clinic)
    answer = jane.post("/patients/1/reply", {"form": "reply", "text": "Hello"})
    assert answer.status_code == 400
    assert 'id="e-text"' in answer.text and "cannot get SMS" in answer.text
    assert 'aria-describedby="e-text"' in answer.text and 'aria-invalid="true"' in answer.text
    assert ">Hello</textarea>" in answer.text
    assert _tables(clinic) == before


def test_empty_reply_changes_nothing(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    before = _tables(clinic)
    answer = jane.post("/patients/1/reply", {"form": "reply", "text": "  "})
    assert answer.status_code == 400 and "must not be empty" in answer.text
    assert _tables(clinic) == before


def test_the_conversation_shows_both_ways_in_time_order(jane: Console, clinic: Clinic) -> None:
    app = jane.app
    with app.db() as db:
        reply = store(db, Incoming("SM1", PHONE, "+12125550100", "Is the swelling normal?"),
                      app.clock())
    settle(app, reply.id or 0, queue=False)
    jane.clock.now += timedelta(minutes=5)
    jane.sign_in("clinician")
    jane.post("/patients/1/reply", {"text": "Yes, it goes down in two days."})
    page = jane.get("/patients/1").text
    conversation = page[page.index('id="conversation"'):page.index('id="history"')]
    asked = conversation.index("Is the swelling normal?")
    auto = conversation.index("Automatic answer")
    answered = conversation.index("Yes, it goes down in two days.")
    assert asked < auto < answered
    assert "The patient wrote" in conversation
    assert f'Reply by <span title="{EMAILS["clinician"]}">Dr Clara Ink</span>' in conversation


def test_history_newest_first_with_who_and_pages(jane: Console, clinic: Clinic) -> None:
    with jane.app.db() as db:
        for n in range(60):
            record(db, jane.clock() + timedelta(seconds=n), "patient.updated", 1, f"change {n}")
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    history = page[page.index('id="history"'):]
    assert history.index("change 59") < history.index("change 58")
    assert "change 9<" not in history  # on the next page
    assert "aftercare (automatic)" in history and "command line" not in history
    assert 'href="/patients/1?hpage=2#history"' in page
    older = jane.get("/patients/1", hpage="2").text
    assert 'href="/patients/1?hpage=1#history"' in older
    assert "change 9<" in older and "change 59" not in older
    assert "command line" in older  # the enrollment, made with the CLI


def test_forget_needs_an_admin(jane: Console, clinic: Clinic) -> None:
    for role in ("frontdesk", "clinician"):
        jane.sign_in(role)
        before = _tables(clinic)
        answer = jane.post("/patients/1/forget", {"form": "forget", "confirm": "FORGET"})
        assert answer.status_code == 403
        assert _tables(clinic) == before


def test_forget_with_the_wrong_confirmation_changes_nothing(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("admin")
    assert "Forget this patient" in jane.get("/patients/1").text
    before = _tables(clinic)
    for typed in ("jane doe", "forget", ""):
        answer = jane.post("/patients/1/forget", {"form": "forget", "confirm": typed})
        assert answer.status_code == 400
        assert 'id="e-confirm"' in answer.text and "exactly" in answer.text
    assert _tables(clinic) == before


@pytest.mark.parametrize("typed", ["Jane Doe", "FORGET"])
def test_forget(jane: Console, clinic: Clinic, typed: str) -> None:
    jane.sign_in("admin")
    answer = jane.post("/patients/1/forget", {"form": "forget", "confirm": typed})
    assert answer.status_code == 303, answer.text
    page = jane.follow(answer).text
    assert "The patient was forgotten" in page and "Jane Doe" not in page
    assert clinic.rows("SELECT name, phone FROM patient") == [("(forgotten)", None)]
    assert _actors(clinic, "patient.forgotten") == [EMAILS["admin"]]
    # No actions on a forgotten patient: no form but sign-out's.
    assert re.findall(r'<form method="post" action="([^"]+)"', page) == ["/logout"]
    before = _tables(clinic)
    again = jane.post("/patients/1/consent", {"channel": "sms", "choice": "in"})
    assert again.status_code == 400 and "forgotten" in again.text
    assert _tables(clinic) == before


def test_actions_need_the_csrf_token(jane: Console, clinic: Clinic) -> None:
    jane.sign_in("admin")
    before = _tables(clinic)
    for path in ("/patients/1/consent", "/sessions/2/no-show", "/patients/1/forget"):
        assert jane.post(path, {"channel": "sms", "choice": "out", "confirm": "FORGET"},
                         csrf="forged").status_code == 403
    assert _tables(clinic) == before


def test_the_page_costs_the_same_queries_however_long_the_record(jane: Console,
                                                                 clinic: Clinic) -> None:
    jane.sign_in("frontdesk")
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    def page_queries() -> int:
        statements.clear()
        event.listen(jane.app.engine, "before_cursor_execute", count)
        try:
            assert jane.get("/patients/1").status_code == 200
        finally:
            event.remove(jane.app.engine, "before_cursor_execute", count)
        return len(statements)

    small = page_queries()
    for day in (8, 15, 22):
        _book(jane, f"2026-12-{day:02d}T11:00")
    jane.post("/patients/1/book", {"course": "new:mesobotox", "at": "2027-01-05T09:00"})
    jane.post("/patients/1/reply", {"text": "one"})
    jane.follow(jane.post("/patients/1/reply", {"text": "two"}))  # its notice read
    assert page_queries() == small


def test_the_conversation_pages_latest_first(jane: Console, clinic: Clinic) -> None:
    app = jane.app
    with app.db(actor=EMAILS["frontdesk"]) as db:
        patient = db.get(Patient, 1)
        assert patient is not None
        for n in range(60):
            queue_staff_reply(db, patient, f"note {n}.", app.clock() + timedelta(seconds=n))
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    conversation = page[page.index('id="conversation"'):page.index('id="history"')]
    assert "note 59." in conversation and "note 10." in conversation
    assert "note 9." not in conversation
    assert conversation.index("note 10.") < conversation.index("note 59.")  # oldest first
    assert 'href="/patients/1?cpage=2#conversation"' in conversation
    older = jane.get("/patients/1", cpage="2").text
    assert "note 9." in older and "note 59." not in older


def test_the_timeline_opens_on_the_page_holding_now(jane: Console, clinic: Clinic) -> None:
    app = jane.app
    with app.db() as db:
        patient = db.get(Patient, 1)
        assert patient is not None
        for week in range(1, 25):
            book(db, app.planner(), patient, jane.clock() + timedelta(weeks=week), course_id=1)
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    timeline = page[page.index('id="messages"'):page.index('id="conversation"')]
    assert "Now: 1 Dec 2026, 10:00 EST" in timeline and "24 Nov 2026" in timeline
    assert 'href="/patients/1?tpage=2#messages"' in timeline
    later = jane.get("/patients/1", tpage="2").text
    later_timeline = later[later.index('id="messages"'):later.index('id="conversation"')]
    assert "Now:" not in later_timeline and "24 Nov 2026" not in later_timeline
    assert 'href="/patients/1?tpage=1#messages"' in later_timeline
    # Half a year on, "now" is past every session: the page opens on the last page.
    jane.clock.now += timedelta(weeks=26)
    jane.sign_in("frontdesk")
    page = jane.get("/patients/1").text
    timeline = page[page.index('id="messages"'):page.index('id="conversation"')]
    assert "Now: 1 Jun 2027" in timeline and 'href="/patients/1?tpage=1#messages"' in timeline
    assert "tpage=3" not in timeline
