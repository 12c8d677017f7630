"""The console's inbox: replies urgent first; acknowledge, answer by SMS, close, re-triage;
urgent and review replies are a clinician's, and a refused action changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from aftercare import replies
from conftest import Clinic
from console_kit import EMAILS, Console, console

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

__all__ = ["console"]

PHONE = "+12125550123"
URGENT = "I have a fever and my lips are swollen"
REVIEW = "the bruise is still there"
ROUTINE = "Thanks, see you next week"


def _patient(clinic: Clinic, name: str = "Jane Doe", phone: str = PHONE) -> None:
    added = clinic.run("patient", "add", "--name", name, "--phone", phone)
    assert added.exit_code == 0, added.output


def _reply(console: Console, body: str, sender: str = PHONE) -> int:
    """A reply stored and triaged by the library, as the webhook does it."""
    sid = f"SM{console.clinic.count('reply') + 1:04d}"
    with console.app.db() as db:
        reply = replies.store(db, replies.Incoming(sid, sender, "+12125550100", body),
                              console.clock())
        reply_id = reply.id
    assert reply_id is not None
    replies.settle(console.app, reply_id, queue=False)
    return reply_id


def _state(clinic: Clinic) -> list[object]:
    """Everything a refused action must leave as it was."""
    return [clinic.rows("SELECT * FROM reply ORDER BY id"),
            clinic.rows("SELECT * FROM notice ORDER BY id"), clinic.count("event")]


def _card(html: str, reply_id: int) -> str:
    """The part of the page about one reply."""
    found = re.search(rf'<article[^>]*id="reply-{reply_id}".*?</article>', html, re.S)
    assert found, f"reply {reply_id} is not on the page"
    return found.group(0)


@pytest.fixture
def three(console: Console) -> dict[str, int]:
    """Jane texted three times: a routine reply, a review one, then an urgent one."""
    _patient(console.clinic)
    ids = {}
    for level, body in (("routine", ROUTINE), ("review", REVIEW), ("urgent", URGENT)):
        ids[level] = _reply(console, body)
        console.clock.now += timedelta(minutes=5)
    levels = dict(console.clinic.rows("SELECT body, triage FROM reply"))
    assert levels == {ROUTINE: "routine", REVIEW: "review", URGENT: "urgent"}
    return ids


def test_the_inbox_lists_urgent_first_with_level_wait_patient_and_text(
        console: Console, three: dict[str, int]) -> None:
    console.sign_in("clinician")
    page = console.get("/inbox")
    assert page.status_code == 200
    order = [int(n) for n in re.findall(r'<article[^>]*id="reply-(\d+)"', page.text)]
    assert order == [three["urgent"], three["review"], three["routine"]]
    urgent = _card(page.text, three["urgent"])
    assert 'class="badge urgent">Urgent' in urgent
    assert "Waiting 5 min" in urgent  # received 5 minutes before the clock now reads
    assert '<a href="/patients/1">Jane Doe</a>' in urgent and URGENT in urgent
    assert "Waiting 15 min" in _card(page.text, three["routine"])
    assert 'class="badge review">Review' in _card(page.text, three["review"])


def test_closed_replies_show_only_when_asked(console: Console, three: dict[str, int]) -> None:
    console.sign_in("clinician")
    assert console.post(f"/inbox/{three['routine']}/close").status_code == 303
    assert f'id="reply-{three["routine"]}"' not in console.get("/inbox").text
    shown = console.get("/inbox", closed="1").text
    card = _card(shown, three["routine"])
    assert 'class="badge closed">Closed' in card and "Acknowledge" not in card
    assert 'name="closed" value="1" checked' in shown


def test_the_front_desk_sees_urgent_replies_without_their_actions(
        console: Console, three: dict[str, int]) -> None:
    console.sign_in("frontdesk")
    page = console.get("/inbox").text
    for level in ("urgent", "review"):
        card = _card(page, three[level])
        assert "Only a clinician can act on urgent and review replies." in card
        assert "<form" not in card
    routine = _card(page, three["routine"])
    assert f'aria-label="Acknowledge reply {three["routine"]}"' in routine
    assert f'aria-label="Answer reply {three["routine"]}"' in routine
    assert f'aria-label="Close reply {three["routine"]}"' in routine


@pytest.mark.parametrize(("action", "form"), [
    ("acknowledge", {}), ("answer", {"text": "We will call you."}),
    ("close", {"note": "called"}), ("triage", {"level": "routine"})])
@pytest.mark.parametrize("level", ["urgent", "review"])
def test_the_front_desk_may_not_act_on_urgent_or_review_replies(
        console: Console, three: dict[str, int], action: str, form: dict[str, str],
        level: str) -> None:
    console.sign_in("frontdesk")
    before = _state(console.clinic)
    answer = console.post(f"/inbox/{three[level]}/{action}", form)
    assert answer.status_code == 403
    assert "Your role does not allow this; nothing was changed." in answer.text
    assert _state(console.clinic) == before


def test_the_front_desk_acts_on_routine_replies(console: Console, three: dict[str, int]) -> None:
    console.sign_in("frontdesk")
    routine = three["routine"]
    done = console.post(f"/inbox/{routine}/acknowledge")
    assert "Reply acknowledged." in console.follow(done).text
    assert console.clinic.rows(f"SELECT status FROM reply WHERE id = {routine}") == [
        ("acknowledged",)]
    assert console.clinic.rows("SELECT kind, actor FROM event WHERE kind = 'reply.acknowledged'") \
        == [("reply.acknowledged", EMAILS["frontdesk"])]


def test_a_clinician_acknowledges_an_urgent_reply(console: Console, three: dict[str, int]) -> None:
    console.sign_in("clinician")
    urgent = three["urgent"]
    assert console.post(f"/inbox/{urgent}/acknowledge").status_code == 303
    assert console.clinic.rows(f"SELECT status FROM reply WHERE id = {urgent}") == [
        ("acknowledged",)]
    card = _card(console.get("/inbox").text, urgent)
    assert 'class="badge acknowledged">Acknowledged' in card
    assert f'aria-label="Acknowledge reply {urgent}"' not in card  # done already
    assert f'aria-label="Answer reply {urgent}"' in card


def test_a_clinician_answers_an_urgent_reply_and_the_patient_gets_the_sms(
        console: Console, three: dict[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    console.sign_in("clinician")
    urgent = three["urgent"]
    capsys.readouterr()
    sent = console.post(f"/inbox/{urgent}/answer",
                        {"text": "  Please call us now on 212 555 0100.  "})
    assert "Answer sent to Jane Doe." in console.follow(sent).text
    assert "Please call us now on 212 555 0100." in capsys.readouterr().out  # the SMS channel
    assert console.clinic.rows("SELECT kind, channel, to_address, body, status, staff FROM notice "
                               "WHERE kind = 'staff_reply'") == [
        ("staff_reply", "sms", PHONE, "Please call us now on 212 555 0100.", "sent",
         EMAILS["clinician"])]
    # Answering acknowledges; the history says who answered.
    assert console.clinic.rows(f"SELECT status FROM reply WHERE id = {urgent}") == [
        ("acknowledged",)]
    assert console.clinic.rows("SELECT kind, actor FROM event WHERE kind IN "
                               "('reply.sent', 'reply.acknowledged') ORDER BY id") == [
        ("reply.sent", EMAILS["clinician"]), ("reply.acknowledged", EMAILS["clinician"])]


def test_an_empty_answer_is_refused_next_to_its_field(console: Console,
                                                      three: dict[str, int]) -> None:
    console.sign_in("clinician")
    before = _state(console.clinic)
    refused = console.post(f"/inbox/{three['urgent']}/answer", {"text": "   "})
    assert refused.status_code == 400
    card = _card(refused.text, three["urgent"])
    assert f'id="e-answer-{three["urgent"]}" class="error">must not be empty' in card
    assert f'aria-describedby="e-answer-{three["urgent"]}"' in card
    assert _state(console.clinic) == before


def test_a_patient_who_opted_out_is_not_offered_an_sms_answer(console: Console,
                                                              three: dict[str, int]) -> None:
    assert console.clinic.run("patient", "opt-out", "1", "--channel", "sms").exit_code == 0
    console.sign_in("clinician")
    card = _card(console.get("/inbox").text, three["urgent"])
    assert "Answer by SMS" not in card
    assert "No SMS can be sent to this patient (patient opted out of sms): call them instead." in card
    before = _state(console.clinic)
    refused = console.post(f"/inbox/{three['urgent']}/answer", {"text": "hello"})
    assert refused.status_code == 400 and "cannot get SMS" in refused.text
    assert _state(console.clinic) == before


def test_close_with_a_note(console: Console, three: dict[str, int]) -> None:
    console.sign_in("clinician")
    review = three["review"]
    closed = console.post(f"/inbox/{review}/close", {"note": "called her back"})
    assert "Reply closed." in console.follow(closed).text
    assert console.clinic.rows(f"SELECT status, note FROM reply WHERE id = {review}") == [
        ("closed", "called her back")]
    assert "Note: called her back" in _card(console.get("/inbox", closed="1").text, review)
    assert console.clinic.rows("SELECT actor FROM event WHERE kind = 'reply.closed'") == [
        (EMAILS["clinician"],)]


def test_a_note_too_long_is_refused_next_to_its_field(console: Console,
                                                      three: dict[str, int]) -> None:
    console.sign_in("clinician")
    before = _state(console.clinic)
    refused = console.post(f"/inbox/{three['review']}/close", {"note": "x" * 501})
    assert refused.status_code == 400
    card = _card(refused.text, three["review"])
    assert f'id="e-note-{three["review"]}" class="error">is longer than 500 characters' in card
    assert _state(console.clinic) == before


def test_re_triage(console: Console, three: dict[str, int]) -> None:
    console.sign_in("frontdesk")
    routine = three["routine"]
    # The desk may raise a routine reply; from then on it is a clinician's.
    assert console.post(f"/inbox/{routine}/triage", {"level": "review"}).status_code == 303
    assert console.clinic.rows(f"SELECT triage FROM reply WHERE id = {routine}") == [("review",)]
    assert console.post(f"/inbox/{routine}/triage", {"level": "routine"}).status_code == 403
    console.sign_in("clinician")
    assert console.post(f"/inbox/{routine}/triage", {"level": "routine"}).status_code == 303
    assert console.clinic.rows("SELECT detail, actor FROM event WHERE kind = 'reply.retriaged' "
                               "ORDER BY id") == [
        (f"reply {routine}: routine -> review", EMAILS["frontdesk"]),
        (f"reply {routine}: review -> routine", EMAILS["clinician"])]
    before = _state(console.clinic)
    bad = console.post(f"/inbox/{routine}/triage", {"level": "panic"})
    assert bad.status_code == 400
    assert f'id="e-level-{routine}" class="error">&#39;panic&#39; is not a triage level' in bad.text
    assert _state(console.clinic) == before


def test_an_unknown_number_cannot_be_answered_from_the_inbox(console: Console) -> None:
    stranger = _reply(console, "Hi, I changed my phone, this is Jane", sender="+12125550999")
    console.sign_in("frontdesk")
    card = _card(console.get("/inbox").text, stranger)
    assert "Unknown number +12125550999" in card
    assert "Answer by SMS" not in card and "Triage level" in card
    assert "Acknowledge" in card and "Close" in card
    before = _state(console.clinic)
    refused = console.post(f"/inbox/{stranger}/answer", {"text": "hello"})
    assert refused.status_code == 400
    assert "This number is not a patient&#39;s" in refused.text
    assert _state(console.clinic) == before
    assert console.post(f"/inbox/{stranger}/acknowledge").status_code == 303
    assert console.post(f"/inbox/{stranger}/close").status_code == 303
    assert console.clinic.rows("SELECT status FROM reply") == [("closed",)]
    # Staff may still re-triage it, as `aftercare inbox triage` may.
    assert console.post(f"/inbox/{stranger}/triage", {"level": "review"}).status_code == 303
    assert console.clinic.rows("SELECT triage FROM reply") == [("review",)]


def test_a_missing_reply_is_404_and_a_forged_form_403(console: Console,
                                                      three: dict[str, int]) -> None:
    console.sign_in("clinician")
    assert console.post("/inbox/999/acknowledge").status_code == 404
    before = _state(console.clinic)
    assert console.post(f"/inbox/{three['urgent']}/acknowledge", csrf="forged").status_code == 403
    assert _state(console.clinic) == before


def test_reply_text_and_patient_names_are_escaped(console: Console) -> None:
    _patient(console.clinic, name="<script>alert(1)</script>")
    _reply(console, "<script>alert(2)</script> I have a fever")
    console.sign_in("clinician")
    page = console.get("/inbox").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt; I have a fever" in page


def test_the_inbox_pages_fifty_at_a_time_closed_ones_after_the_waiting(console: Console) -> None:
    _patient(console.clinic)
    for n in range(53):
        _reply(console, f"question number {n}")
    console.clinic.rows("UPDATE reply SET status = 'closed', closed_at = received_at "
                        "WHERE id > 50")
    console.sign_in("frontdesk")
    first = console.get("/inbox", closed="1").text
    assert len(re.findall(r"<article", first)) == 50
    assert 'rel="next"' in first
    second = console.get("/inbox", closed="1", page="2").text
    assert re.findall(r'<article[^>]*id="reply-(\d+)"', second) == ["53", "52", "51"]
    assert 'rel="next"' not in second and 'rel="prev"' in second
    assert 'rel="next"' not in console.get("/inbox").text  # 50 waiting: one page


def test_the_alerts_sent_about_an_urgent_reply_are_shown(console: Console) -> None:
    _patient(console.clinic)
    console.app.settings.clinic.on_call_phone = "+12125550177"
    urgent = _reply(console, URGENT)
    console.sign_in("clinician")
    card = _card(console.get("/inbox").text, urgent)
    assert 'Alerts:' in card
    assert 'Alert (SMS) <span class="badge pending">Pending</span>' in card


def test_the_front_desk_cannot_answer_from_the_patient_page_either(
        console: Console, three: dict[str, int]) -> None:
    # The inbox's rule holds on the patient page: while an urgent or review reply waits,
    # a clinician answers the patient.
    console.sign_in("frontdesk")
    page = console.get("/patients/1").text
    assert "a clinician answers it" in page and "Send reply" not in page
    before = _state(console.clinic)
    assert console.post("/patients/1/reply", {"text": "All fine!"}).status_code == 403
    assert _state(console.clinic) == before
    console.sign_in("clinician")
    assert console.post("/patients/1/reply", {"text": "I am calling you now."}).status_code == 303
    console.sign_in("admin")
    for level in ("urgent", "review"):
        assert console.post(f"/inbox/{three[level]}/close").status_code == 303
    console.sign_in("frontdesk")
    assert "Send reply" in console.get("/patients/1").text


def test_a_form_posted_twice_texts_the_patient_once(console: Console,
                                                    three: dict[str, int]) -> None:
    console.sign_in("clinician")
    inbox = console.get("/inbox").text
    once = re.search(rf'action="/inbox/{three["urgent"]}/answer".*?name="once" value="([^"]+)"',
                     inbox, re.S)
    assert once
    form = {"text": "Please call us now.", "once": once.group(1)}
    first = console.post(f"/inbox/{three['urgent']}/answer", form)
    again = console.post(f"/inbox/{three['urgent']}/answer", form)  # a double click
    assert first.status_code == again.status_code == 303
    assert "Answer sent" in console.follow(again).text
    assert console.clinic.rows("SELECT body, status FROM notice WHERE kind = 'staff_reply'") == [
        ("Please call us now.", "sent")]
    assert console.clinic.rows("SELECT count(*) FROM event WHERE kind = 'reply.sent'") == [(1,)]
    # A new form is a new message, even with the same words.
    page = console.get("/patients/1").text
    fresh = re.search(r'action="/patients/1/reply".*?name="once" value="([^"]+)"', page, re.S)
    assert fresh and fresh.group(1) != once.group(1)
    assert console.post("/patients/1/reply", {"text": "Please call us now.",
                                              "once": fresh.group(1)}).status_code == 303
    assert console.clinic.count("notice") - console.clinic.rows(
        "SELECT count(*) FROM notice WHERE kind != 'staff_reply'")[0][0] == 2
