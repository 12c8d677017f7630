"""Twilio's webhooks through the real HTTP app, signed exactly as Twilio signs them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from aftercare.app import App
from aftercare.web import create_app
from conftest import Clinic, FixedClock, utc
from webhook_kit import PHONE, PUBLIC, SESSION, TOKEN, listening_app

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

NOW = SESSION + timedelta(hours=3)


class Twilio:
    """Posts forms to the app as Twilio would: signed for `PUBLIC` + path."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, params: dict[str, str], *, url: str | None = None,
             signature: str | None = None) -> object:
        signed_for = url or PUBLIC + path
        sig = signature if signature is not None else \
            RequestValidator(TOKEN).compute_signature(signed_for, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sig:
            headers["X-Twilio-Signature"] = sig
        return self.client.post(path, content=urlencode(params), headers=headers)

    def sms(self, body: str, sid: str = "SM0001", sender: str = PHONE) -> object:
        return self.post("/twilio/sms", {"MessageSid": sid, "From": sender,
                                         "To": "+12125550100", "Body": body})

    def status(self, sid: str, status: str, code: str = "") -> object:
        params = {"MessageSid": sid, "MessageStatus": status}
        if code:
            params["ErrorCode"] = code
        return self.post("/twilio/status", params)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def app(clinic: Clinic, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> App:
    return listening_app(clinic, clock, monkeypatch)


@pytest.fixture
def twilio(app: App) -> Iterator[Twilio]:
    with TestClient(create_app(app)) as client:
        yield Twilio(client)


def _state(clinic: Clinic) -> list[tuple[object, ...]]:
    """Everything a refused request must leave as it was."""
    return [*clinic.rows("SELECT id, status, last_error FROM message ORDER BY id"),
            *clinic.rows("SELECT * FROM reply"), *clinic.rows("SELECT * FROM patient"),
            (clinic.count("event"),)]


@pytest.mark.parametrize("how", ["unsigned", "forged", "other url", "other token"])
def test_a_request_not_signed_by_twilio_for_this_url_is_refused(
        clinic: Clinic, twilio: Twilio, how: str) -> None:
    before = _state(clinic)
    params = {"MessageSid": "SM0001", "From": PHONE, "To": "+12125550100", "Body": "STOP"}
    signature = {"unsigned": "", "forged": "bm90IGEgc2lnbmF0dXJl",
                 "other url": RequestValidator(TOKEN).compute_signature(
                     "https://evil.example/twilio/sms", params),
                 "other token": RequestValidator("f" * 32).compute_signature(
                     PUBLIC + "/twilio/sms", params)}[how]
    answer = twilio.post("/twilio/sms", params, signature=signature)
    assert answer.status_code == 403  # type: ignore[attr-defined]
    assert _state(clinic) == before


def test_stop_opts_out_through_the_desk_rule_and_a_retry_changes_nothing(
        clinic: Clinic, twilio: Twilio) -> None:
    answer = twilio.sms("  Stop ")
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert "<Message>" not in answer.text  # type: ignore[attr-defined]  # Twilio confirms STOP
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") == 0
    assert clinic.count("message WHERE channel = 'email' AND status = 'pending'") > 0
    assert clinic.rows("SELECT keyword, status FROM reply") == [("stop", "handled")]
    assert "sms (replied STOP)" in [d for (d,) in clinic.rows(
        "SELECT detail FROM event WHERE kind = 'patient.opted_out'")]
    before = _state(clinic)
    assert twilio.sms("  Stop ").status_code == 200  # type: ignore[attr-defined]
    assert _state(clinic) == before


def test_start_after_stop_revives_what_is_still_in_its_window(clinic: Clinic,
                                                            twilio: Twilio) -> None:
    twilio.sms("STOP", sid="SM0001")
    pending_before = clinic.count("message WHERE channel = 'sms' AND status = 'pending'")
    twilio.sms("unstop", sid="SM0002")
    assert clinic.rows("SELECT sms_opted_out_at FROM patient") == [(None,)]
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") > pending_before


def test_help_is_answered_with_the_clinic_and_how_to_stop(clinic: Clinic, twilio: Twilio) -> None:
    answer = twilio.sms("help")
    text = answer.text  # type: ignore[attr-defined]
    assert "<Message>" in text and "Lumiere Aesthetics" in text and "+1 212 555 0100" in text
    assert "STOP" in text
    assert clinic.rows("SELECT keyword, status FROM reply") == [("help", "handled")]


def test_help_is_left_to_twilio_when_configured(clinic: Clinic, app: App) -> None:
    app.settings.sms.keyword_replies = "twilio"
    with TestClient(create_app(app)) as client:
        answer = Twilio(client).sms("HELP")
    assert "<Message>" not in answer.text  # type: ignore[attr-defined]
    assert clinic.rows("SELECT keyword, status FROM reply") == [("help", "handled")]


def test_an_urgent_reply_is_answered_at_once_and_waits_in_the_inbox(
        clinic: Clinic, twilio: Twilio) -> None:
    answer = twilio.sms("my thigh is hot and red and I have a fever")
    text = answer.text  # type: ignore[attr-defined]
    assert "911" in text and "+1 212 555 0100" in text
    assert clinic.rows("SELECT triage, status, patient_id FROM reply") == [("urgent", "open", 1)]
    [listed] = clinic.json("inbox")
    assert (listed["triage"], listed["status"], listed["from"]) == ("urgent", "open", PHONE)
    assert listed["body"] == "my thigh is hot and red and I have a fever"


def test_a_routine_reply_is_acknowledged_once_a_day(clinic: Clinic, twilio: Twilio,
                                                    clock: FixedClock) -> None:
    first = twilio.sms("Thanks, all good!", sid="SM0001").text  # type: ignore[attr-defined]
    second = twilio.sms("See you next week", sid="SM0002").text  # type: ignore[attr-defined]
    assert "<Message>" in first and "<Message>" not in second
    clock.now += timedelta(days=1, minutes=1)
    third = twilio.sms("One more question", sid="SM0003").text  # type: ignore[attr-defined]
    assert "<Message>" in third
    assert [t for (t,) in clinic.rows("SELECT triage FROM reply")] == ["routine"] * 3


def test_a_reply_from_an_unknown_number_is_kept(clinic: Clinic, twilio: Twilio) -> None:
    twilio.sms("Hello, I changed my phone: Jane Doe", sender="+12125550999")
    assert clinic.rows("SELECT patient_id, from_number, status FROM reply") == [
        (None, "+12125550999", "open")]
    listing = clinic.run("inbox").stdout
    assert "unknown +12125550999" in listing


def test_inbox_ack_and_close(clinic: Clinic, twilio: Twilio) -> None:
    twilio.sms("the bruise is still there")
    [reply] = clinic.json("inbox")
    assert clinic.run("inbox", "ack", str(reply["id"])).exit_code == 0
    assert clinic.json("inbox")[0]["status"] == "acknowledged"
    closed = clinic.run("inbox", "close", str(reply["id"]), "--note", "called her back")
    assert closed.exit_code == 0
    assert clinic.json("inbox") == []
    assert clinic.json("inbox", "--all")[0]["note"] == "called her back"
    missing = clinic.run("inbox", "ack", "99")
    assert missing.exit_code == 2 and "reply: no reply with id 99" in missing.stderr


def _sent(clinic: Clinic, sid: str = "SMsent1") -> None:
    """The first_48h SMS went out and Twilio gave it `sid`."""
    clinic.rows(f"UPDATE message SET status = 'sent', provider_id = '{sid}', attempts = 1, "
                "sent_at = '2026-03-02 16:30:00.000000' "
                "WHERE step = 'first_48h' AND channel = 'sms'")


def _first(clinic: Clinic) -> tuple[object, ...]:
    return clinic.rows("SELECT status, delivered_at IS NOT NULL, last_error, flag FROM message "
                       "WHERE step = 'first_48h' AND channel = 'sms'")[0]


def test_receipts_move_forward_only_and_twice_is_once(clinic: Clinic, twilio: Twilio) -> None:
    _sent(clinic)
    assert twilio.status("SMsent1", "sent").status_code == 204  # type: ignore[attr-defined]
    assert _first(clinic)[0] == "sent"
    twilio.status("SMsent1", "delivered")
    assert _first(clinic)[:2] == ("delivered", 1)
    before = _state(clinic)
    twilio.status("SMsent1", "delivered")  # Twilio retried
    twilio.status("SMsent1", "sent")  # a late, out-of-order callback
    twilio.status("SMsent1", "undelivered", "30003")
    assert _state(clinic) == before


def test_a_receipt_that_condemns_the_number_closes_the_route(clinic: Clinic,
                                                             twilio: Twilio) -> None:
    _sent(clinic)
    twilio.status("SMsent1", "undelivered", "30005")
    assert _first(clinic)[0] == "undelivered" and "30005" in str(_first(clinic)[2])
    assert clinic.rows("SELECT phone_invalid_at IS NOT NULL FROM patient") == [(1,)]
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") == 0
    assert clinic.count("message WHERE channel = 'email' AND status = 'pending'") > 0


def test_a_transient_receipt_retries_within_the_window(clinic: Clinic, twilio: Twilio) -> None:
    _sent(clinic)
    twilio.status("SMsent1", "undelivered", "30003")
    status, send_after, attempts = clinic.rows(
        "SELECT status, send_after, attempts FROM message "
        "WHERE step = 'first_48h' AND channel = 'sms'")[0]
    assert (status, attempts) == ("pending", 1)
    assert send_after > "2026-03-02 16:30"  # later than now, by the retry delay
    # Delivered after all (receipts can cross): the retry is called off.
    twilio.status("SMsent1", "delivered")
    assert _first(clinic)[:2] == ("delivered", 1)


def test_carrier_filtering_is_flagged_for_the_clinic(clinic: Clinic, twilio: Twilio) -> None:
    _sent(clinic)
    twilio.status("SMsent1", "undelivered", "30007")
    status, _delivered, error, flag = _first(clinic)
    assert status == "undelivered" and "30007" in str(error)
    assert "carrier" in str(flag)
    [row] = [m for m in clinic.json("messages") if m["status"] == "undelivered"]
    assert row["flag"] == flag and row["delivered_at"] is None
    assert f"FLAG: {flag}" in clinic.run("messages").stdout


def test_bad_requests_get_a_4xx_and_change_nothing(clinic: Clinic, twilio: Twilio,
                                                   app: App) -> None:
    before = _state(clinic)
    assert twilio.post("/twilio/status", {"MessageSid": "SM1"}).status_code == 400  # type: ignore[attr-defined]
    assert twilio.post("/twilio/sms", {"From": PHONE}).status_code == 400  # type: ignore[attr-defined]
    assert twilio.post("/twilio/status", {"MessageSid": "SM1", "MessageStatus": "failed",
                                          "ErrorCode": "x"}).status_code == 400  # type: ignore[attr-defined]
    big = {"MessageSid": "SM1", "From": PHONE, "Body": "x" * (app.settings.web.max_body_bytes + 1)}
    assert twilio.post("/twilio/sms", big).status_code == 413  # type: ignore[attr-defined]
    assert twilio.client.post("/nowhere").status_code == 404
    assert twilio.client.get("/twilio/sms").status_code == 405
    assert _state(clinic) == before


def test_forget_erases_what_the_patient_texted(clinic: Clinic, twilio: Twilio) -> None:
    twilio.sms("my arm is swollen and hot")
    assert clinic.run("patient", "forget", "J1").exit_code == 0
    assert clinic.rows("SELECT body, from_number, answer FROM reply") == [(None, None, None)]


@pytest.fixture
def on_call(clinic: Clinic, app: App) -> None:
    clinic.config.write_text(clinic.config.read_text().replace(
        "[clinic]\n", '[clinic]\non_call_phone = "+12125550177"\n'
                      'alerts_email = "oncall@lumiere.example"\n'), encoding="utf-8")


def _notices(clinic: Clinic) -> list[tuple[object, ...]]:
    return clinic.rows("SELECT kind, channel, to_address, status FROM notice ORDER BY id")


def test_an_urgent_reply_alerts_the_on_call_contact_without_the_text_by_sms(
        clinic: Clinic, on_call: None, clock: FixedClock) -> None:
    from aftercare import notices

    printed = io.StringIO()
    app = clinic.app(clock=clock, console=printed)
    with TestClient(create_app(app)) as client:
        Twilio(client).sms("J'ai de la fievre et du pus sur la cuisse")
    assert _notices(clinic) == [("alert", "sms", "+12125550177", "pending"),
                                ("alert", "email", "oncall@lumiere.example", "pending")]
    assert notices.run_once(app).sent == 2
    out = printed.getvalue()
    sms, email = out.split("Email #")
    assert "URGENT reply from patient J1 (Jane Doe)" in sms and "fievre" not in sms
    assert "fievre" in email  # the clinic's own mailbox gets the words
    [listed] = clinic.json("inbox")
    assert listed["alerts"] == ["alert sms sent", "alert email sent"]


def test_an_unacknowledged_urgent_reply_is_escalated_until_someone_has_it(
        clinic: Clinic, on_call: None, clock: FixedClock) -> None:
    from aftercare import notices

    app = clinic.app(clock=clock, console=io.StringIO())
    with TestClient(create_app(app)) as client:
        Twilio(client).sms("I can't breathe properly and my lips are swelling")
    notices.run_once(app)
    clock.now += timedelta(minutes=14)
    notices.run_once(app)
    assert [k for k, *_ in _notices(clinic)] == ["alert", "alert"]
    clock.now += timedelta(minutes=1)
    notices.run_once(app)
    assert [k for k, *_ in _notices(clinic)] == ["alert", "alert", "escalation", "escalation"]
    assert clinic.count("notice WHERE status = 'sent'") == 4
    [reply] = clinic.json("inbox")
    assert clinic.run("--now", clock.now.isoformat(), "inbox", "ack",
                      str(reply["id"])).exit_code == 0
    clock.now += timedelta(hours=2)
    notices.run_once(app)
    assert clinic.count("notice") == 4  # acknowledged: nobody is woken again


def test_staff_reply_is_sent_now_and_refused_where_sms_cannot_go(clinic: Clinic,
                                                                app: App) -> None:
    sent = clinic.run("reply", "J1", "--text", "Please call us when you can.")
    assert sent.exit_code == 0, sent.output
    assert "Please call us when you can." in sent.stdout  # the console channel printed it
    assert clinic.rows("SELECT kind, channel, to_address, status, staff FROM notice") == [
        ("staff_reply", "sms", PHONE, "sent", "cli")]
    assert clinic.run("patient", "opt-out", "J1", "--channel", "sms").exit_code == 0
    refused = clinic.run("reply", "J1", "--text", "hello")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("error: patient: patient 1 cannot get SMS: patient "
                                      "opted out of sms")
    assert clinic.count("notice") == 1
    empty = clinic.run("reply", "J1", "--text", "  ")
    assert empty.exit_code == 2 and "text: must not be empty" in empty.stderr


def test_a_reply_stored_before_a_crash_is_acted_on_later(clinic: Clinic, app: App,
                                                         clock: FixedClock) -> None:
    from aftercare import replies

    with app.db() as db:  # the process died right after storing it
        replies.store(db, replies.Incoming("SM0001", PHONE, "+12125550100", "help"), clock())
    assert replies.settle_unhandled(app) == 0  # too fresh: the webhook may still be at it
    clock.now += timedelta(minutes=2)
    assert replies.settle_unhandled(app) == 1
    assert clinic.rows("SELECT status, handled_at IS NOT NULL FROM reply") == [("handled", 1)]
    # The answer could not ride on the webhook's response: it goes as a notice.
    assert clinic.rows("SELECT kind, to_address, status FROM notice") == [
        ("staff_reply", PHONE, "pending")]
    assert replies.settle_unhandled(app) == 0


@pytest.fixture
def asked(clinic: Clinic, app: App) -> Clinic:
    """J1's next session is booked and its reminder, with the bruising check-in, went out."""
    booked = (SESSION + timedelta(days=14)).isoformat()
    clinic.json("--now", NOW.isoformat(), "session", "book", "J1", "--at", booked)
    clinic.rows("UPDATE message SET status = 'sent', sent_at = '2026-03-14 15:00:00.000000', "
                "provider_id = 'SMreminder' WHERE step = 'next_session' AND channel = 'sms'")
    return clinic


@pytest.mark.parametrize(("text", "checkin", "flagged"), [
    ("2", "bruising: still_there", True),
    (" 1 ", "bruising: gone", False),
    ("1 - all gone, thanks", "bruising: gone", False),
])
def test_the_bruising_check_in_is_recorded_and_flags_the_session(
        asked: Clinic, twilio: Twilio, clock: FixedClock, text: str, checkin: str,
        flagged: bool) -> None:
    clock.now = utc("2026-03-14T11:00-04:00")  # after the reminder, before the session
    answer = twilio.sms(text).text  # type: ignore[attr-defined]
    session = asked.json("course", "show", "1")["sessions"][-1]
    assert session["checkin"] == checkin
    assert (session["flag"] is not None) == flagged
    if flagged:
        assert "call you to move it" in answer
        [waiting] = asked.json("inbox")
        assert waiting["triage"] == "review"
        shown = asked.run("--now", clock.now.isoformat(), "course", "show", "1").stdout
        assert "FLAG: bruising not gone: call the patient to move this session" in shown
        timeline = asked.run("--now", clock.now.isoformat(), "timeline", "J1").stdout
        assert "bruising not gone" in timeline
    else:
        assert "noted: the bruising has gone" in answer
        assert asked.json("inbox") == []


@pytest.mark.parametrize("text", ["there is still a bruise on my thigh",
                                  "the bruising has gone, thanks", "j'ai encore un bleu",
                                  "plus de bleus"])
def test_a_reply_about_bruising_in_other_words_is_flagged_for_staff_to_read(
        asked: Clinic, twilio: Twilio, clock: FixedClock, text: str) -> None:
    clock.now = utc("2026-03-14T11:00-04:00")
    answer = twilio.sms(text).text  # type: ignore[attr-defined]
    session = asked.json("course", "show", "1")["sessions"][-1]
    # Nothing is assumed from free words: no answer recorded, no promise to call.
    assert session["checkin"] is None
    assert session["flag"] == "the patient wrote about bruising: read the reply"
    assert "call you to move it" not in answer
    assert [r["triage"] for r in asked.json("inbox")] == ["review"]


def test_yes_is_a_keyword_so_the_question_never_asks_for_it(asked: Clinic) -> None:
    for path in ("en", "fr"):
        text = (Path(__file__).resolve().parents[1] / "templates" / path /
                "next_session.sms.txt").read_text(encoding="utf-8")
        assert "Reply 1" in text or "Répondez 1" in text
        assert "if yes" not in text.lower()


def test_no_check_in_once_the_session_has_begun(asked: Clinic, twilio: Twilio,
                                                 clock: FixedClock) -> None:
    clock.now = utc("2026-03-16T12:00-04:00")  # the session began at 11:30 (EDT)
    twilio.sms("2")
    assert asked.json("course", "show", "1")["sessions"][-1]["checkin"] is None
    assert [r["triage"] for r in asked.json("inbox")] == ["routine"]


def test_staff_can_re_triage_a_reply(clinic: Clinic, twilio: Twilio) -> None:
    twilio.sms("I feel a bit odd today")
    [reply] = clinic.json("inbox")
    assert reply["triage"] == "routine"
    assert clinic.run("inbox", "triage", str(reply["id"]), "urgent").exit_code == 0
    assert clinic.json("inbox")[0]["triage"] == "urgent"
    bad = clinic.run("inbox", "triage", str(reply["id"]), "panic")
    assert bad.exit_code == 2
    assert "reply.retriaged" in [k for (k,) in clinic.rows("SELECT kind FROM event")]


def test_a_reply_made_urgent_by_staff_alerts_the_on_call_contact_at_once(
        clinic: Clinic, twilio: Twilio, on_call: None) -> None:
    twilio.sms("I feel a bit odd today")
    [reply] = clinic.json("inbox")
    assert clinic.count("notice") == 0
    assert clinic.run("inbox", "triage", str(reply["id"]), "urgent").exit_code == 0
    assert [k for (k,) in clinic.rows("SELECT kind FROM notice")] == ["alert", "alert"]


def test_an_alert_email_never_carries_the_patients_unsubscribe_link(
        clinic: Clinic, on_call: None, clock: FixedClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aftercare import notices
    from aftercare.channels import Channel, Outgoing

    class Recording(Channel):
        name = "email"

        def __init__(self) -> None:
            self.sent: list[Outgoing] = []

        def send(self, message: Outgoing) -> str:
            self.sent.append(message)
            return "recorded"

    app = clinic.app(clock=clock, console=io.StringIO())
    email = Recording()
    app.channels["email"] = email
    with TestClient(create_app(app)) as client:
        Twilio(client).sms("my lips are swelling and I can't breathe")
    notices.run_once(app)
    [alert] = email.sent
    assert alert.to == "oncall@lumiere.example" and alert.patient_id is None


def test_forget_erases_staff_replies_and_alerts_about_the_patient(clinic: Clinic,
                                                                  on_call: None) -> None:
    app = clinic.app(console=io.StringIO())
    with TestClient(create_app(app)) as client:
        Twilio(client).sms("my face is swelling and I have a fever")
    assert clinic.run("reply", "J1", "--text", "Calling you now").exit_code == 0
    assert clinic.run("patient", "forget", "J1").exit_code == 0
    rows = clinic.rows("SELECT kind, to_address, body, subject FROM notice ORDER BY id")
    assert all(body is None and subject is None for _k, _to, body, subject in rows)
    assert [to for kind, to, *_ in rows if kind == "staff_reply"] == [None]


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_all_read(
        clinic: Clinic, twilio: Twilio, app: App) -> None:
    limit = app.settings.web.max_body_bytes
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 100 x the limit, if the server kept reading
            sent.append(1)
            yield b"x" * limit

    answer = twilio.client.post("/twilio/sms", content=chunks(),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert clinic.count("reply") == 0


@pytest.mark.parametrize("word", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "quit",
                                  "revoke", "OptOut"])
def test_every_opt_out_keyword_opts_out(clinic: Clinic, twilio: Twilio, word: str) -> None:
    twilio.sms(f" {word} ")
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    assert clinic.rows("SELECT keyword FROM reply") == [("stop",)]


@pytest.mark.parametrize("word", ["START", "unstop", "Yes"])
def test_every_opt_in_keyword_opts_back_in(clinic: Clinic, twilio: Twilio, word: str) -> None:
    twilio.sms("STOP", sid="SM0001")
    twilio.sms(word, sid="SM0002")
    assert clinic.rows("SELECT sms_opted_out_at FROM patient") == [(None,)]


@pytest.mark.parametrize("text", ["stop please", "please STOP", "help me", "info?"])
def test_a_keyword_inside_a_longer_message_is_a_reply_for_the_inbox(
        clinic: Clinic, twilio: Twilio, text: str) -> None:
    twilio.sms(text)
    assert clinic.rows("SELECT sms_opted_out_at FROM patient") == [(None,)]
    assert clinic.rows("SELECT keyword, status FROM reply") == [(None, "open")]
