"""`sms.inbound = "poll"`: the real twilio client asks the fake Twilio for replies and receipts."""

from __future__ import annotations

import io
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from fakes.twilio import FakeTwilio, contract
from twilio.base.exceptions import TwilioRestException

from aftercare import notices
from aftercare.app import App
from aftercare.daemon import Sender
from aftercare.polling import (
    FIRST_LOOKBACK,
    INCOMING_CURSOR,
    SAFETY_MARGIN,
    Poller,
    poll_once,
    twilio_client,
)
from conftest import Clinic, FixedClock, run_at, twilio_config, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

PHONE = "+12125550123"
CLINIC = "+12125550100"  # sms.from in twilio_config
SESSION = utc("2026-03-02T10:30-05:00")
NOW = SESSION + timedelta(hours=3)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def fake(fake_twilio: FakeTwilio, clock: FixedClock) -> FakeTwilio:
    """The fake Twilio on the test's clock (it stamps date_sent with it)."""
    fake_twilio.clock = clock
    return fake_twilio


def _enroll(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", PHONE, "--email",
                "jane@example.com", "--ref", "J1")
    clinic.json("--now", (SESSION + timedelta(minutes=30)).isoformat(), "enroll", "J1",
                "--treatment", "cellulite", "--session-at", SESSION.isoformat())


def _app(clinic: Clinic, fake: FakeTwilio, clock: FixedClock, **sms: object) -> App:
    config = twilio_config(clinic, fake, inbound="poll", **sms)
    return App.from_config(config, clock=clock, console=io.StringIO())


@pytest.fixture
def app(clinic: Clinic, fake: FakeTwilio, clock: FixedClock) -> App:
    _enroll(clinic)
    return _app(clinic, fake, clock)


def _lists(fake: FakeTwilio) -> list[dict[str, str]]:
    """The query of every list request, in order."""
    return [r.query for r in fake.requests if r.method == "GET" and r.path == fake.messages_path]


def _fetches(fake: FakeTwilio, sid: str) -> int:
    path = f"{fake.messages_path.removesuffix('.json')}/{sid}.json"
    return len([r for r in fake.requests if r.method == "GET" and r.path == path])


def _cursor(clinic: Clinic, name: str = INCOMING_CURSOR) -> list[tuple[Any, ...]]:
    return clinic.rows(f"SELECT value FROM pollcursor WHERE name = '{name}'")


# -------------------------------------------------------------------------------------- incoming


def test_stop_by_poll_opts_out_and_answers_nothing(clinic: Clinic, fake: FakeTwilio,
                                                    app: App) -> None:
    sid = fake.receive(PHONE, CLINIC, "  Stop ")
    counts = poll_once(app)
    assert (counts.listed, counts.stored, counts.acted, counts.answers) == (1, 1, 1, 0)
    assert counts.errors == []
    assert clinic.rows("SELECT provider_id, keyword, status FROM reply") == [
        (sid, "stop", "handled")]
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") == 0
    assert clinic.count("notice") == 0  # Twilio confirms a STOP itself
    assert _lists(fake) == [{"To": CLINIC, "DateSent>": "2026-03-01T18:30:00Z",
                             "PageSize": "200"}]  # first poll: the last day


def test_a_routine_reply_lands_in_the_inbox_and_its_acknowledgement_is_queued(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    sent_at = NOW - timedelta(minutes=3)
    fake.receive(PHONE, CLINIC, "Thanks, all good!", at=sent_at)
    assert poll_once(app).answers == 1
    [listed] = clinic.json("inbox")
    assert (listed["triage"], listed["status"], listed["from"]) == ("routine", "open", PHONE)
    assert listed["body"] == "Thanks, all good!"
    # Received when the patient sent it, not when we asked.
    assert clinic.rows("SELECT received_at FROM reply") == [("2026-03-02 18:27:00.000000",)]
    assert clinic.rows("SELECT channel, to_address, status FROM notice") == [
        ("sms", PHONE, "pending")]


def test_help_is_answered_by_an_ordinary_outgoing_sms(clinic: Clinic, fake: FakeTwilio,
                                                      app: App) -> None:
    fake.receive(PHONE, CLINIC, "help")
    poll_once(app)
    assert clinic.rows("SELECT keyword, status FROM reply") == [("help", "handled")]
    notices.run_once(app)
    [answer] = fake.messages_to(PHONE)
    assert answer["from"] == CLINIC and answer["direction"] == "outbound-api"
    assert "Lumiere Aesthetics" in answer["body"] and "STOP" in answer["body"]


def test_each_message_is_stored_and_acted_on_once_across_polls_and_restarts(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    fake.receive(PHONE, CLINIC, "Thanks, all good!")
    fake.receive(PHONE, CLINIC, "HELP")
    first = poll_once(app)
    assert (first.listed, first.stored, first.acted, first.answers) == (2, 2, 2, 2)
    again = poll_once(app)
    assert (again.listed, again.stored, again.acted, again.answers) == (2, 0, 0, 0)
    clock.now += timedelta(minutes=5)
    restarted = _app(clinic, fake, clock)  # a new process on the same database
    after = poll_once(restarted)
    assert (after.listed, after.stored, after.acted) == (2, 0, 0)
    assert clinic.count("reply") == 2 and clinic.count("notice") == 2
    # A third message after the restart is new, and only it is acted on.
    fake.receive(PHONE, CLINIC, "See you next week")
    later = poll_once(restarted)
    assert (later.listed, later.stored, later.acted) == (3, 1, 1)
    assert clinic.count("reply") == 3
    assert clinic.count("notice") == 2  # one acknowledgement a day


def test_every_page_is_read_and_replies_are_stored_oldest_first(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    for n in range(7):
        fake.receive(PHONE, CLINIC, f"message {n}", at=NOW - timedelta(minutes=10 - n))
    counts = Poller(app, page_size=3).poll_once()
    assert (counts.listed, counts.stored) == (7, 7)
    assert [q.get("Page") for q in _lists(fake)] == [None, "1", "2"]
    assert [b for (b,) in clinic.rows("SELECT body FROM reply ORDER BY id")] == [
        f"message {n}" for n in range(7)]
    assert clinic.count("reply") == 7


def test_the_cursor_is_kept_in_the_database_and_survives_a_restart(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    assert _cursor(clinic) == []
    newest = NOW - timedelta(minutes=2)
    fake.receive(PHONE, CLINIC, "first", at=NOW - timedelta(minutes=20))
    fake.receive(PHONE, CLINIC, "second", at=newest)
    poll_once(app)
    first_since = (NOW - FIRST_LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _lists(fake)[-1]["DateSent>"] == first_since == "2026-03-01T18:30:00Z"
    assert _cursor(clinic) == [(newest.isoformat(),)]
    clock.now += timedelta(hours=1)
    poll_once(_app(clinic, fake, clock))  # restarted: the cursor is read back
    since = newest - SAFETY_MARGIN
    assert _lists(fake)[-1]["DateSent>"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _cursor(clinic) == [(newest.isoformat(),)]  # nothing newer: it stays


def test_a_message_still_arriving_holds_the_cursor(clinic: Clinic, fake: FakeTwilio,
                                                   app: App, clock: FixedClock) -> None:
    arriving = fake.receive(PHONE, CLINIC, "a long message", at=NOW - timedelta(minutes=30))
    fake.set_status(arriving, "receiving")
    fake.receive(PHONE, CLINIC, "later", at=NOW - timedelta(minutes=1))
    counts = poll_once(app)
    assert (counts.listed, counts.stored) == (2, 1)
    assert _cursor(clinic) == []  # not past the one still arriving
    fake.set_status(arriving, "received")
    clock.now += timedelta(hours=1)
    assert poll_once(app).stored == 1
    assert _cursor(clinic) == [((NOW - timedelta(minutes=1)).isoformat(),)]


def test_twilio_unreachable_leaves_everything_for_the_next_poll(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    fake.receive(PHONE, CLINIC, "Thanks")
    fake.down()
    try:
        counts = poll_once(app)
        Poller(app).run()  # the daemon's job logs it and goes on
    finally:
        fake.up()
    assert counts.errors == ["incoming: cannot list messages (ConnectionError)"]
    assert clinic.count("reply") == 0 and _cursor(clinic) == []
    assert poll_once(app).stored == 1


def test_missing_credentials_are_reported_not_raised(app: App,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    assert poll_once(app).errors == ["sms: TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN unset"]
    Poller(app).run()


def test_with_a_messaging_service_only_receipts_are_polled(
        clinic: Clinic, fake: FakeTwilio, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    _enroll(clinic)
    app = _app(clinic, fake, clock, **{"from": "", "messaging_service_sid": "MG" + "a" * 32})
    sid = _send_first_sms(clinic, app)
    fake.receive(PHONE, CLINIC, "Thanks")
    fake.set_status(sid, "delivered")
    polling_log = logging.getLogger("aftercare.polling")
    polling_log.addHandler(caplog.handler)  # the CLI's logging.basicConfig(force=True) took it off
    try:
        counts = poll_once(app)
    finally:
        polling_log.removeHandler(caplog.handler)
    assert "sms.from is not set" in caplog.text
    assert _lists(fake) == [] and clinic.count("reply") == 0
    assert (counts.checked, counts.receipts) == (1, 1)


# -------------------------------------------------------------------------------------- receipts


def _send_first_sms(clinic: Clinic, app: App) -> str:
    """The first_48h SMS goes out through Twilio at the app's time; its SID."""
    assert run_at(app.dispatcher(), app.clock()).sent >= 1
    [(sid,)] = clinic.rows("SELECT provider_id FROM message WHERE channel = 'sms' "
                           "AND status = 'sent'")
    return str(sid)


def _first(clinic: Clinic) -> tuple[Any, ...]:
    return clinic.rows("SELECT status, delivered_at IS NOT NULL, last_error FROM message "
                       "WHERE step = 'first_48h' AND channel = 'sms'")[0]


def test_a_delivered_status_is_applied_once(clinic: Clinic, fake: FakeTwilio, app: App,
                                            clock: FixedClock) -> None:
    sid = _send_first_sms(clinic, app)
    fake.set_status(sid, "delivered")
    counts = poll_once(app)
    assert (counts.checked, counts.receipts) == (1, 1)
    assert _first(clinic)[:2] == ("delivered", 1)
    clock.now += timedelta(hours=1)
    assert poll_once(app).checked == 0  # final: never asked again
    assert _fetches(fake, sid) == 1


def test_an_undelivered_status_goes_through_the_receipt_rule(clinic: Clinic, fake: FakeTwilio,
                                                             app: App) -> None:
    sid = _send_first_sms(clinic, app)
    fake.set_status(sid, "undelivered", 30005)  # unknown handset: the number is condemned
    assert poll_once(app).receipts == 1
    status, _delivered, error = _first(clinic)
    assert status == "undelivered" and "30005" in str(error)
    assert clinic.rows("SELECT phone_invalid_at IS NOT NULL FROM patient") == [(1,)]
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") == 0


def test_a_transient_status_retries_and_a_late_delivery_calls_it_off(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    sid = _send_first_sms(clinic, app)
    fake.set_status(sid, "undelivered", 30003)
    assert poll_once(app).receipts == 1
    assert _first(clinic)[0] == "pending"  # waiting to retry, its SID kept
    fake.set_status(sid, "delivered")
    clock.now += timedelta(minutes=1)
    assert poll_once(app).receipts == 1
    assert _first(clinic)[:2] == ("delivered", 1)


def test_a_message_is_asked_about_at_growing_ages_not_every_poll(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    sid = _send_first_sms(clinic, app)
    assert poll_once(app).checked == 1  # still "queued" at Twilio: nothing changes
    assert _first(clinic)[0] == "sent"
    clock.now += timedelta(seconds=30)
    assert poll_once(app).checked == 0
    clock.now += timedelta(seconds=31)  # a minute old
    assert poll_once(app).checked == 1
    for _ in range(4):
        clock.now += timedelta(seconds=15)
        poll_once(app)
    assert _fetches(fake, sid) == 2
    fake.set_status(sid, "delivered")
    clock.now = NOW + timedelta(minutes=5)
    assert poll_once(app).receipts == 1


def test_messages_older_than_72_hours_are_not_asked_about(
        clinic: Clinic, fake: FakeTwilio, app: App, clock: FixedClock) -> None:
    sid = _send_first_sms(clinic, app)
    clock.now = NOW + timedelta(hours=72, seconds=1)
    fake.set_status(sid, "delivered")
    restarted = _app(clinic, fake, clock)  # no receipts cursor would make it ask everything
    clinic.rows("DELETE FROM pollcursor")
    assert poll_once(restarted).checked == 0
    assert _fetches(fake, sid) == 0
    assert _first(clinic)[0] == "sent"


def test_a_message_twilio_does_not_know_is_skipped(clinic: Clinic, fake: FakeTwilio,
                                                   app: App) -> None:
    _send_first_sms(clinic, app)
    clinic.rows("UPDATE message SET provider_id = 'SM" + "0" * 32 + "' WHERE status = 'sent'")
    counts = poll_once(app)
    assert (counts.checked, counts.errors) == (0, [])
    assert _first(clinic)[0] == "sent"


# -------------------------------------------------------------------------------------- the daemon


def _poll_job_seconds(app: App) -> float | None:
    sender = Sender.start(app, threading.Event(), check_setup=False)
    try:
        job = sender.scheduler.get_job("poll")
        return None if job is None else job.trigger.interval.total_seconds()
    finally:
        sender.shutdown()


def test_the_daemon_polls_only_twilio_in_poll_mode(clinic: Clinic, fake: FakeTwilio,
                                                   clock: FixedClock) -> None:
    polling = _app(clinic, fake, clock)
    assert _poll_job_seconds(polling) == 15  # poll_seconds is 0.2 here: Twilio is asked less
    hooked = App.from_config(twilio_config(clinic, fake, inbound="webhook"), clock=clock,
                             console=io.StringIO())
    assert _poll_job_seconds(hooked) is None
    console = clinic.app(clock=clock, console=io.StringIO())
    assert console.settings.sms_inbound == "poll" and _poll_job_seconds(console) is None


# -------------------------------------------------------------------------------------- the fake


def test_the_fake_lists_and_fetches_incoming_messages_as_twilio_shows_them(
        fake: FakeTwilio, app: App) -> None:
    client = twilio_client(app.settings.sms)
    sid = fake.receive(PHONE, CLINIC, "hello")
    [listed] = client.messages.list(to=CLINIC)
    assert (listed.sid, listed.direction, listed.status) == (sid, "inbound", "received")
    assert (listed.from_, listed.to, listed.body, listed.date_sent) == (PHONE, CLINIC, "hello", NOW)
    assert client.messages.list(to=PHONE) == []
    fake.set_status(sid, "received")
    fetched = client.messages(sid).fetch()
    assert (fetched.sid, fetched.status, fetched.error_code) == (sid, "received", None)
    raw = requests.get(f"{fake.url}{fake.messages_path.removesuffix('.json')}/{sid}.json",
                       auth=(fake.account_sid, fake.auth_token), timeout=2).json()
    assert set(raw) == set(contract().message_keys)
    with pytest.raises(TwilioRestException) as unknown:
        client.messages("SM" + "0" * 32).fetch()
    assert unknown.value.status == 404  # a valid request: not a contract problem
    with pytest.raises(ValueError, match=r"E\.164"):
        fake.receive("12345", CLINIC, "hi")
    with pytest.raises(ValueError, match="not one of"):
        fake.set_status(sid, "lost")
    with pytest.raises(KeyError):
        fake.set_status("SM" + "0" * 32, "delivered")


def test_the_fake_refuses_what_the_fetch_operation_does_not_define() -> None:
    with FakeTwilio() as server:
        base = f"{server.url}{server.messages_path.removesuffix('.json')}"
        auth = (server.account_sid, server.auth_token)
        assert requests.get(f"{base}/XX123.json", auth=auth, timeout=2).status_code == 400
        assert requests.get(f"{base}/SM{'0' * 32}.json", params={"Page": "1"}, auth=auth,
                            timeout=2).status_code == 400
        assert requests.delete(f"{base}/SM{'0' * 32}.json", auth=auth, timeout=2).status_code == 405
        assert requests.get(f"{base}/SM{'0' * 32}.json", timeout=2).status_code == 401
        assert len(server.problems) == 5, server.problems  # the bad Sid breaks two rules
