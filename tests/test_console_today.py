"""The console's Today page: replies waiting (urgent on top), the clinic's day of messages
and sessions (its calendar day, in its time zone), and failures with what to do."""

from __future__ import annotations

import re
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from aftercare import replies
from aftercare.worklist import Remedy, clinic_day, day_of, remedy
from conftest import Clinic, utc
from console_kit import Console, console

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

__all__ = ["console"]

PHONE = "+12125550123"
NEW_YORK = ZoneInfo("America/New_York")


def _reply(console: Console, body: str, sender: str = PHONE) -> int:
    """A reply stored and triaged by the library, as the webhook does it."""
    sid = f"SM{console.clinic.count('reply') + 1:04d}"
    with console.app.db() as db:
        reply_id = replies.store(db, replies.Incoming(sid, sender, "+12125550100", body),
                                 console.clock()).id
    assert reply_id is not None
    replies.settle(console.app, reply_id, queue=False)
    return reply_id


def _stamp(text: str) -> str:
    """An ISO time as the database stores it (naive UTC)."""
    return utc(text).strftime("%Y-%m-%d %H:%M:%S.%f")


def _set(clinic: Clinic, message_id: int, status: str, *, due: str | None = None,
         sent: str | None = None, error: str | None = None) -> None:
    """Put one planned message where a test needs it."""
    values = [f"status = '{status}'", f"last_error = {repr(error) if error else 'NULL'}"]
    if due:
        values.append(f"send_after = '{_stamp(due)}'")
    values.append(f"sent_at = '{_stamp(sent)}'" if sent else "sent_at = NULL")
    clinic.rows(f"UPDATE message SET {', '.join(values)} WHERE id = {message_id}")


@pytest.fixture
def jane(console: Console) -> Clinic:
    """Jane had a session a week ago (8 SMS planned); nothing else is pending."""
    clinic = console.clinic
    assert clinic.run("patient", "add", "--name", "Jane Doe", "--phone", PHONE).exit_code == 0
    enrolled = clinic.run("--now", "2026-11-24T10:30-05:00", "enroll", "1", "--treatment",
                          "cellulite", "--session-at", "2026-11-24T10:00-05:00")
    assert enrolled.exit_code == 0, enrolled.output
    clinic.rows("UPDATE message SET status = 'cancelled'")
    return clinic


def test_every_role_sees_today(console: Console) -> None:
    for role in ("frontdesk", "clinician", "admin"):
        console.sign_in(role)
        page = console.get("/")
        assert page.status_code == 200, role
        assert "<h1>Today <span class=\"muted\">Tue 1 Dec 2026</span></h1>" in page.text
        assert "No urgent or review reply is waiting." in page.text
        assert "No session is booked today." in page.text


def test_urgent_replies_come_first_with_how_long_they_waited(console: Console,
                                                             jane: Clinic) -> None:
    console.clock.now -= timedelta(minutes=40)
    review = _reply(console, "the bruise is still there")
    console.clock.now += timedelta(minutes=28)
    urgent = _reply(console, "I have a fever and the area is hot to the touch")
    stranger = _reply(console, "my lips are swollen", sender="+12125550999")
    _reply(console, "Thanks, see you next week")
    console.clock.now += timedelta(minutes=12)
    console.sign_in("frontdesk")
    page = console.get("/").text
    order = [int(n) for n in re.findall(r'<tr class="\w+" id="reply-(\d+)"', page)]
    assert order == [urgent, stranger, review]  # urgent ones (oldest first), then review
    row = re.search(rf'id="reply-{urgent}">.*?</tr>', page, re.S)
    assert row
    assert '<span class="waited">12 min</span>' in row.group(0)
    assert '<a href="/patients/1">Jane Doe</a>' in row.group(0)
    assert f'href="/inbox#reply-{urgent}"' in row.group(0)
    assert '<span class="waited">40 min</span>' in page
    assert "Unknown number +12125550999" in page
    assert "Thanks, see you next week" not in page  # routine: counted, left to the inbox
    assert "1 routine reply waits in the inbox." in page
    assert "<strong>2</strong> urgent replies waiting" in page


def test_the_day_is_the_clinics_calendar_day_in_its_zone(console: Console, jane: Clinic) -> None:
    for at in ("2026-12-01T23:30", "2026-12-02T00:30"):  # clinic time
        assert jane.run("--now", "2026-12-01T10:00-05:00", "session", "book", "1",
                        "--at", at).exit_code == 0
    jane.rows("UPDATE message SET status = 'cancelled'")  # the reminders those planned
    _set(jane, 1, "pending", due="2026-11-30T23:30-05:00")  # yesterday, late
    _set(jane, 2, "pending", due="2026-12-01T00:30-05:00")  # today, just after midnight
    _set(jane, 3, "pending", due="2026-12-01T23:30-05:00")  # today, late: 04:30 UTC tomorrow
    _set(jane, 4, "pending", due="2026-12-02T00:30-05:00")  # tomorrow
    console.sign_in("frontdesk")
    page = console.get("/").text
    assert "2 messages still to send today" in page
    assert "1 Dec 2026, 00:30 EST" in page and "1 Dec 2026, 23:30 EST" in page
    assert "30 Nov 2026, 23:30 EST" not in page and "2 Dec 2026, 00:30 EST" not in page
    assert 'href="/messages?status=pending&amp;day=2026-12-01&amp;sort=due"' in page
    sessions = page.split('id="sessions-title"')[1]
    assert "1 Dec 2026, 23:30 EST" in sessions and "2 Dec 2026" not in sessions
    # Late in the evening it is still the 1st in New York, though the 2nd in UTC...
    console.clock.now = utc("2026-12-01T23:45-05:00")
    console.sign_in("frontdesk")  # hours later: the idle session has expired
    assert "Tue 1 Dec 2026" in console.get("/").text
    # ...and after midnight it is the 2nd: the session at 00:30 and message 4 are today's.
    console.clock.now = utc("2026-12-02T00:05-05:00")
    console.sign_in("frontdesk")
    page = console.get("/").text
    assert "Wed 2 Dec 2026" in page and "1 message still to send today" in page
    assert "2 Dec 2026, 00:30 EST" in page.split('id="sessions-title"')[1]


def test_sessions_show_their_check_in_answers(console: Console, jane: Clinic) -> None:
    assert jane.run("--now", "2026-12-01T09:00-05:00", "session", "book", "1",
                    "--at", "2026-12-01T14:00").exit_code == 0
    jane.rows("UPDATE session SET checkin = 'bruising: still_there', flag = 'bruising not "
              "gone: call the patient to move this session' WHERE number = 2")
    console.sign_in("frontdesk")
    sessions = console.get("/").text.split('id="sessions-title"')[1]
    assert "1 Dec 2026, 14:00 EST" in sessions and '<a href="/patients/1">Jane Doe</a>' in sessions
    assert "cellulite mesotherapy, session 2" in sessions
    assert "bruising: still there" in sessions
    assert "Flag: bruising not gone: call the patient to move this session" in sessions


def test_messages_sent_today_by_status(console: Console, jane: Clinic) -> None:
    _set(jane, 1, "delivered", sent="2026-12-01T08:00-05:00")
    _set(jane, 2, "sent", sent="2026-12-01T09:30-05:00")
    _set(jane, 3, "delivered", sent="2026-11-30T23:59-05:00")  # yesterday
    console.sign_in("frontdesk")
    page = console.get("/").text
    assert "2 messages sent today" in page
    assert 'href="/messages?status=delivered&amp;day=2026-12-01"><span class="badge delivered">' \
           'Delivered</span> 1</a>' in page
    assert 'href="/messages?status=sent&amp;day=2026-12-01"><span class="badge sent">' \
           'Sent</span> 1</a>' in page


def test_failures_say_what_to_do(console: Console, jane: Clinic) -> None:
    _set(jane, 1, "failed", due="2026-11-30T10:00-05:00",
         error="21610: HTTP 400: Attempt to send to unsubscribed recipient")
    _set(jane, 2, "undelivered", due="2026-11-29T10:00-05:00", sent="2026-11-29T10:00-05:00",
         error="30005: Twilio undelivered")
    _set(jane, 3, "failed", due="2026-11-20T10:00-05:00", error="21211: too old")  # 11 days
    console.sign_in("frontdesk")
    failures = console.get("/").text.split('id="failures-title"')[1].split("</section>")[0]
    assert failures.count("<tr>") == 3  # the header and two failures
    assert "The patient opted out by STOP." in failures
    assert "Check the phone number with the patient" in failures
    assert "30005: Twilio undelivered" in failures and "first_48h (SMS)" in failures
    assert "too old" not in failures
    # A forgotten patient's failures need nobody.
    jane.rows("UPDATE patient SET forgotten_at = '2026-12-01 12:00:00.000000'")
    assert "No message failed in the last 7 days." in console.get("/").text


def test_patient_names_and_reply_text_are_escaped(console: Console) -> None:
    clinic = console.clinic
    assert clinic.run("patient", "add", "--name", "<script>alert(1)</script>",
                      "--phone", PHONE).exit_code == 0
    _reply(console, "<script>alert(2)</script> fever and pus")
    console.sign_in("frontdesk")
    page = console.get("/").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt; fever and pus" in page


def test_a_day_runs_from_local_midnight_to_the_next_even_across_dst() -> None:
    assert day_of(date(2026, 3, 8), NEW_YORK).end - day_of(date(2026, 3, 8), NEW_YORK).start \
        == timedelta(hours=23)
    autumn = day_of(date(2026, 11, 1), NEW_YORK)
    assert autumn.end - autumn.start == timedelta(hours=25)
    today = clinic_day(utc("2026-12-02T04:59-00:00"), NEW_YORK)
    assert today.date == date(2026, 12, 1)
    assert today.start == utc("2026-12-01T05:00+00:00") and today.end == utc("2026-12-02T05:00+00:00")
    assert today.holds(utc("2026-12-01T23:30-05:00"))
    assert not today.holds(utc("2026-12-02T00:30-05:00"))


@pytest.mark.parametrize(("channel", "error", "expected"), [
    ("sms", "21211: HTTP 400: The 'To' number is not a valid phone number", Remedy.CHECK_PHONE),
    ("sms", "30005: Twilio undelivered", Remedy.CHECK_PHONE),
    ("sms", "30006: Twilio undelivered", Remedy.NOT_MOBILE),
    ("sms", "21614: HTTP 400: not a mobile number", Remedy.NOT_MOBILE),
    ("sms", "21610: HTTP 400: unsubscribed recipient", Remedy.OPTED_OUT),
    ("sms", "30003: Twilio undelivered", Remedy.UNREACHABLE),
    ("sms", "30007: Twilio undelivered: carrier filtering", Remedy.CARRIER_FILTERED),
    ("email", "550: SMTP 550: recipient refused", Remedy.ASK_EMAIL),
    ("email", "535: SMTP 535: relay refused our login or sender", Remedy.SETUP),
    ("sms", "20003: HTTP 401: account or sender refused", Remedy.SETUP),
    ("sms", "channel not set up: TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN unset", Remedy.SETUP),
    ("sms", "cannot render: 'first_name' is undefined", Remedy.TEMPLATE),
    ("sms", "network: ConnectionError", Remedy.SERVICE),
    ("sms", "send interrupted 3 times", Remedy.SERVICE),
    ("email", "21610: not an SMTP code", Remedy.CALL),
    ("sms", "something nobody foresaw", Remedy.CALL),
    ("sms", None, Remedy.CALL),
])
def test_each_failure_reason_has_one_remedy(channel: str, error: str | None,
                                            expected: Remedy) -> None:
    assert remedy(channel, error) == expected
