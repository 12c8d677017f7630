"""The console's message list: filters by status, channel, step and the clinic's day, 50 a
page, in either order; a bad filter value answers 400 next to its field."""

from __future__ import annotations

import re

import pytest

from conftest import Clinic, utc
from console_kit import Console, console

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

__all__ = ["console"]


def _stamp(text: str) -> str:
    return utc(text).strftime("%Y-%m-%d %H:%M:%S.%f")


def _shown(html: str) -> list[int]:
    """The ids of the messages listed, in page order."""
    return [int(n) for n in re.findall(r'<tr id="message-(\d+)">', html)]


def _ids(clinic: Clinic, where: str = "TRUE", order: str = "id DESC") -> list[int]:
    return [i for (i,) in clinic.rows(f"SELECT id FROM message WHERE {where} ORDER BY {order}")]


@pytest.fixture
def planned(console: Console) -> Clinic:
    """Two patients enrolled a week ago, by SMS and email: a few dozen planned messages."""
    clinic = console.clinic
    for n, name in enumerate(("Jane Doe", "Ann Lee"), start=1):
        assert clinic.run("patient", "add", "--name", name, "--phone", f"+1212555012{n}",
                          "--email", f"p{n}@example.com").exit_code == 0
        assert clinic.run("--now", "2026-11-24T10:30-05:00", "enroll", str(n), "--treatment",
                          "cellulite", "--session-at", "2026-11-24T10:00-05:00").exit_code == 0
    assert 20 < clinic.count("message") <= 50
    return clinic


def test_the_list_shows_each_message_newest_planned_first(console: Console,
                                                         planned: Clinic) -> None:
    planned.rows(f"UPDATE message SET status = 'delivered', sent_at = "
                 f"'{_stamp('2026-11-24T11:00:05-05:00')}' WHERE id = 1")
    console.sign_in("frontdesk")
    page = console.get("/messages")
    assert page.status_code == 200
    assert _shown(page.text) == _ids(planned)
    first = re.search(r'<tr id="message-1">.*?</tr>', page.text, re.S)
    assert first
    row = first.group(0)
    assert '<a href="/patients/1">Jane Doe</a>' in row and "first_48h" in row
    assert ">SMS<" in row and 'class="badge delivered">Delivered' in row
    assert "Sent 24 Nov 2026, 11:00 EST" in row
    second = re.search(r'<tr id="message-2">.*?</tr>', page.text, re.S)
    assert second and "Due 24 Nov 2026" in second.group(0)


def test_filters_by_status_channel_and_step(console: Console, planned: Clinic) -> None:
    planned.rows("UPDATE message SET status = 'cancelled' WHERE id % 3 = 0")
    console.sign_in("frontdesk")
    cancelled = console.get("/messages", status="cancelled").text
    assert _shown(cancelled) == _ids(planned, "status = 'cancelled'")
    assert 'value="cancelled" selected' in cancelled
    assert _shown(console.get("/messages", channel="email").text) == _ids(planned,
                                                                           "channel = 'email'")
    both = console.get("/messages", step="first_48h", channel="sms").text
    assert _shown(both) == _ids(planned, "step = 'first_48h' AND channel = 'sms'")
    assert len(_shown(both)) == 2


def test_soonest_due_first(console: Console, planned: Clinic) -> None:
    console.sign_in("frontdesk")
    page = console.get("/messages", status="pending", sort="due").text
    assert _shown(page) == _ids(planned, "status = 'pending'", "send_after, id")


def test_the_day_is_the_clinics_and_a_sent_message_counts_on_the_day_it_went(
        console: Console, planned: Clinic) -> None:
    planned.rows(f"UPDATE message SET status = 'cancelled', "
                 f"send_after = '{_stamp('2027-01-01T12:00-05:00')}'")
    day = [("pending", "2026-11-30T23:30-05:00", None),  # 1: the day before
           ("pending", "2026-12-01T00:30-05:00", None),  # 2: yes
           ("pending", "2026-12-01T23:30-05:00", None),  # 3: yes (the 2nd in UTC)
           ("pending", "2026-12-02T00:30-05:00", None),  # 4: the day after
           ("delivered", "2026-11-30T23:00-05:00", "2026-12-01T08:00-05:00"),  # 5: sent that day
           ("delivered", "2026-12-01T09:00-05:00", "2026-12-02T09:00-05:00")]  # 6: sent the next
    for n, (status, due, sent) in enumerate(day, start=1):
        planned.rows(f"UPDATE message SET status = '{status}', send_after = '{_stamp(due)}', "
                     f"sent_at = {repr(_stamp(sent)) if sent else 'NULL'} WHERE id = {n}")
    console.sign_in("frontdesk")
    page = console.get("/messages", day="2026-12-01").text
    assert _shown(page) == [5, 3, 2]
    assert 'value="2026-12-01"' in page
    assert _shown(console.get("/messages", day="2026-12-01", status="pending",
                              sort="due").text) == [2, 3]
    assert _shown(console.get("/messages", day="2026-12-02").text) == [6, 4]


def test_fifty_a_page(console: Console, planned: Clinic) -> None:
    for n in (3, 4):  # enough messages for two pages
        assert planned.run("patient", "add", "--name", f"P{n}", "--phone", f"+1212555013{n}",
                           "--email", f"p{n}@example.com").exit_code == 0
        assert planned.run("--now", "2026-11-24T10:30-05:00", "enroll", str(n), "--treatment",
                           "cellulite", "--session-at", "2026-11-24T10:00-05:00").exit_code == 0
    everything = _ids(planned)
    assert len(everything) > 50
    console.sign_in("frontdesk")
    first = console.get("/messages").text
    assert _shown(first) == everything[:50]
    assert 'href="/messages?page=2" rel="next"' in first
    second = console.get("/messages", page="2").text
    assert _shown(second) == everything[50:]
    assert 'rel="next"' not in second and 'href="/messages?page=1" rel="prev"' in second
    # The filters stay on the next page's link.
    pending = console.get("/messages", status="pending").text
    assert 'href="/messages?status=pending&amp;page=2" rel="next"' in pending


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("status", "lost", "&#39;lost&#39; is not a message status"),
    ("channel", "fax", "&#39;fax&#39; is not a channel; use sms or email"),
    ("step", "nope", "&#39;nope&#39; is not a step of any protocol"),
    ("day", "2026-02-30", "&#39;2026-02-30&#39; is not a date"),
    ("day", "1850-01-01", "is not a plausible date"),
    ("sort", "random", "&#39;random&#39; is not an order; use newest or due"),
])
def test_a_bad_filter_answers_400_next_to_its_field(console: Console, planned: Clinic,
                                                    name: str, value: str, problem: str) -> None:
    console.sign_in("frontdesk")
    page = console.get("/messages", **{name: value})
    assert page.status_code == 400
    error = re.search(rf'<small id="e-{name}" class="error">([^<]*)</small>', page.text)
    assert error and problem in error.group(1)
    assert f'aria-describedby="e-{name}"' in page.text
    assert _shown(page.text) == []


def test_a_failed_message_says_what_to_do_and_data_is_escaped(console: Console) -> None:
    clinic = console.clinic
    assert clinic.run("patient", "add", "--name", "<script>alert(1)</script>",
                      "--phone", "+12125550123").exit_code == 0
    assert clinic.run("--now", "2026-11-24T10:30-05:00", "enroll", "1", "--treatment",
                      "cellulite", "--session-at", "2026-11-24T10:00-05:00").exit_code == 0
    clinic.rows("UPDATE message SET status = 'failed', last_error = "
                "'21610: HTTP 400: <b>unsubscribed</b>' WHERE id = 1")
    console.sign_in("frontdesk")
    page = console.get("/messages", status="failed").text
    assert _shown(page) == [1]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "21610: HTTP 400: &lt;b&gt;unsubscribed&lt;/b&gt;" in page
    assert "The patient opted out by STOP." in page
