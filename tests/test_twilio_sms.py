"""SMS through the real twilio client against a fake Twilio that checks Twilio's own spec."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from fakes.twilio import (
    FakeTwilio,
    Outcome,
    bad_gateway_html,
    error,
    rate_limited,
    server_error,
    slow,
)

from aftercare.channels import Outgoing
from aftercare.channels.rate_limit import RateLimiter
from aftercare.channels.twilio_sms import TwilioSms
from aftercare.config import Settings, SmsConfig
from aftercare.errors import PHONE_INVALID, SMS_OPTED_OUT, SendError
from conftest import Clinic, midday_zone, recover_at, run_at, twilio_config

TO = "+12125550123"
MESSAGE = Outgoing(message_id=7, channel="sms", to=TO, patient_name="Jane Doe",
                   timezone="America/New_York", step="first_48h", text="Hello from the clinic.")


def _channel(fake: FakeTwilio, **config: object) -> TwilioSms:
    sms = SmsConfig(provider="twilio", api_base_url=fake.url, timeout_seconds=0.5,
                    **({"from": "+12125550100"} | config))
    # The status callback is decided from the whole configuration (sms and web).
    callback = Settings(sms=sms).sms_status_callback
    return TwilioSms(sms, fake.account_sid, fake.auth_token, RateLimiter(1000),
                     status_callback=callback)


def test_send_posts_a_spec_valid_request_and_returns_the_sid(fake_twilio: FakeTwilio) -> None:
    sid = _channel(fake_twilio).send(MESSAGE)
    [created] = fake_twilio.created
    assert sid == created["sid"] and sid.startswith("SM")
    [request] = [r for r in fake_twilio.requests if r.method == "POST"]
    assert request.form == {"To": TO, "From": "+12125550100", "Body": "Hello from the clinic."}


def test_messaging_service_and_status_callback(fake_twilio: FakeTwilio) -> None:
    channel = _channel(fake_twilio, **{"from": "", "messaging_service_sid": "MG" + "a" * 32,
                                       "status_callback_url": "https://clinic.example/twilio"})
    channel.send(MESSAGE)
    [request] = [r for r in fake_twilio.requests if r.method == "POST"]
    assert request.form["MessagingServiceSid"] == "MG" + "a" * 32
    assert request.form["StatusCallback"] == "https://clinic.example/twilio"
    assert "From" not in request.form


@pytest.mark.parametrize(
    ("outcome", "permanent", "code", "consequence"),
    [
        (error(400, 21211, "The 'To' number +12125550123 is not a valid phone number."), True,
         "21211", PHONE_INVALID),
        (error(400, 21614, "'To' number is not a valid mobile number"), True, "21614",
         PHONE_INVALID),
        (error(400, 21610, "Attempt to send to unsubscribed recipient"), True, "21610",
         SMS_OPTED_OUT),
        (error(400, 21602, "Message body is required."), True, "21602", None),
        (rate_limited(), False, "20429", None),
        (server_error(), False, "20500", None),
        (bad_gateway_html(), False, "502", None),
        (error(401, 20003, "Authenticate"), False, "20003", None),
        (error(400, 21606, "The From phone number is not a valid, SMS-capable number"), False,
         "21606", None),
    ],
    ids=["21211-invalid", "21614-not-mobile", "21610-stop", "21602-other-4xx", "429",
         "500", "502-html", "401-credentials", "21606-bad-sender"],
)
def test_answers_are_classified(fake_twilio: FakeTwilio, outcome: Outcome, permanent: bool,
                                code: str, consequence: str | None) -> None:
    fake_twilio.script(outcome)
    with pytest.raises(SendError) as caught:
        _channel(fake_twilio).send(MESSAGE)
    error_ = caught.value
    assert (error_.permanent, error_.code, error_.consequence) == (permanent, code, consequence)
    assert not error_.unknown_outcome
    # Our credentials or sender number refused: a setup problem, not the patient's message.
    assert error_.setup_problem == (code in ("20003", "21606"))
    assert TO not in str(error_) and "2125550123" not in str(error_)  # no number in errors


def test_refused_connection_is_transient_and_certainly_unsent(fake_twilio: FakeTwilio) -> None:
    fake_twilio.down()
    try:
        with pytest.raises(SendError) as caught:
            _channel(fake_twilio).send(MESSAGE)
    finally:
        fake_twilio.up()
    assert (caught.value.permanent, caught.value.unknown_outcome) == (False, False)


def test_timeout_is_transient_with_unknown_outcome(fake_twilio: FakeTwilio) -> None:
    fake_twilio.script(slow(1.5))
    with pytest.raises(SendError) as caught:
        _channel(fake_twilio).send(MESSAGE)
    assert (caught.value.permanent, caught.value.unknown_outcome) == (False, True)
    assert fake_twilio.wait_until(lambda: len(fake_twilio.created) == 1, timeout=5)


def test_find_sent_matches_number_body_and_time(fake_twilio: FakeTwilio) -> None:
    channel = _channel(fake_twilio)
    since = datetime.now(UTC)
    sid = channel.send(MESSAGE)
    assert channel.find_sent(TO, MESSAGE.text, since) == sid
    assert channel.find_sent(TO, "another text", since) is None
    assert channel.find_sent("+12125550199", MESSAGE.text, since) is None
    assert channel.find_sent(TO, MESSAGE.text, since + timedelta(hours=1)) is None


def _enroll_due_now(clinic: Clinic, *contact: str) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", TO, *contact,
                "--timezone", midday_zone(), "--ref", "J1")
    session = (datetime.now(UTC) - timedelta(hours=1, minutes=5)).isoformat()
    clinic.json("enroll", "J1", "--treatment", "cellulite", "--session-at", session)


def test_send_due_through_twilio_records_sid_attempts_and_errors(clinic: Clinic,
                                                                  fake_twilio: FakeTwilio) -> None:
    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio)
    fake_twilio.script(server_error())
    first = clinic.json("--config", str(config), "send-due")
    assert (first["retrying"], first["sent"]) == (1, 0)
    [row] = clinic.json("--config", str(config), "messages", "--status", "pending")[:1]
    assert (row["step"], row["attempts"], row["last_error"]) == ("first_48h", 1, "20500: HTTP 500")
    later = (datetime.now(UTC) + timedelta(minutes=3)).isoformat()
    second = clinic.json("--config", str(config), "send-due", "--now", later)
    assert second["sent"] == 1
    [sent] = clinic.json("--config", str(config), "messages", "--status", "sent")
    assert sent["provider_id"] == fake_twilio.created[0]["sid"] and sent["attempts"] == 2
    assert sent["last_error"] is None
    assert fake_twilio.created[0]["body"].endswith("Reply STOP to opt out.")


def test_stop_reply_opts_out_and_leaves_the_plan_to_email(clinic: Clinic,
                                                          fake_twilio: FakeTwilio) -> None:
    # The patient consented to both: email goes on (an SMS-only patient gets no email,
    # see test_reachability).
    _enroll_due_now(clinic, "--email", "jane@example.com")
    config = twilio_config(clinic, fake_twilio)
    fake_twilio.script(error(400, 21610, "Attempt to send to unsubscribed recipient"))
    counts = clinic.json("--config", str(config), "send-due")
    assert counts["failed"] == 1 and counts["sent"] == 1  # the SMS failed, its email twin went
    assert clinic.rows("SELECT sms_opted_out_at IS NOT NULL FROM patient") == [(1,)]
    messages = clinic.json("--config", str(config), "messages")
    assert [m["status"] for m in messages if m["channel"] == "sms"] == ["failed"] + ["cancelled"] * 7
    assert {m["status"] for m in messages if m["channel"] == "email"} == {"sent", "pending"}
    later = (datetime.now(UTC) + timedelta(days=60)).isoformat()
    clinic.json("--config", str(config), "send-due", "--now", later)
    assert len([r for r in fake_twilio.requests if r.method == "POST"]) == 1  # never again


def test_unknown_outcome_is_adopted_not_sent_twice(clinic: Clinic, fake_twilio: FakeTwilio) -> None:
    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio)
    fake_twilio.script(slow(1.5))  # Twilio creates it, but answers after our 1 s timeout
    assert clinic.json("--config", str(config), "send-due")["retrying"] == 1
    assert fake_twilio.wait_until(lambda: len(fake_twilio.created) == 1, timeout=5)
    assert clinic.rows("SELECT status FROM message WHERE step = 'first_48h'") == [("sending",)]
    app = clinic.app(console=io.StringIO())
    app = type(app).from_config(config, console=io.StringIO())
    dispatcher = app.dispatcher()
    later = datetime.now(UTC) + timedelta(seconds=app.settings.daemon.lease_seconds + 1)
    recover_at(dispatcher, later)
    run_at(dispatcher, later)
    assert len(fake_twilio.created) == 1
    assert clinic.rows("SELECT status, provider_id, last_error FROM message "
                       "WHERE step = 'first_48h'") == [
        ("sent", fake_twilio.created[0]["sid"], "adopted after an interrupted send")]
    listing = clinic.run("--config", str(config), "messages", "--status", "sent").stdout
    assert f"{fake_twilio.created[0]['sid']} | adopted after an interrupted send" in listing


def test_killed_between_acceptance_and_record_sends_nothing_twice(clinic: Clinic,
                                                                 fake_twilio: FakeTwilio) -> None:
    import threading

    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio, timeout_seconds=30)
    fake_twilio.hold = threading.Event()  # accept, then hold the reply
    env = {**os.environ, "AFTERCARE_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "aftercare", "send-due"], env=env,
                            cwd=clinic.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not fake_twilio.accepted_event.wait(20):
            proc.kill()
            raise AssertionError(f"Twilio never got the message: {proc.communicate()[1]!r}")
        proc.send_signal(signal.SIGKILL)  # dies after Twilio accepted, before the database update
        proc.wait(20)
    finally:
        proc.kill()
        fake_twilio.hold.set()
    assert clinic.rows("SELECT status FROM message WHERE step = 'first_48h'") == [("sending",)]
    app = type(clinic.app()).from_config(config, console=io.StringIO())
    later = datetime.now(UTC) + timedelta(seconds=app.settings.daemon.lease_seconds + 1)
    dispatcher = app.dispatcher()
    recover_at(dispatcher, later)
    counts = run_at(dispatcher, later)
    assert len(fake_twilio.created) == 1, "the SMS went out twice"
    assert counts.sent == 0
    assert clinic.rows("SELECT status, provider_id FROM message WHERE step = 'first_48h'") == [
        ("sent", fake_twilio.created[0]["sid"])]


def test_interrupted_send_twilio_never_got_is_sent_again(clinic: Clinic,
                                                        fake_twilio: FakeTwilio) -> None:
    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio)
    app = type(clinic.app()).from_config(config, console=io.StringIO())
    now = datetime.now(UTC)
    dead = app.dispatcher()
    dead.clock = lambda: now
    dead.claim(1)  # claimed, then the process died before calling Twilio
    dispatcher = app.dispatcher()
    later = now + timedelta(seconds=app.settings.daemon.lease_seconds + 1)
    assert recover_at(dispatcher, later) == 1
    assert run_at(dispatcher, later).sent == 1
    assert len(fake_twilio.created) == 1


def test_check_reports_credentials_and_reachability(clinic: Clinic, fake_twilio: FakeTwilio,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = twilio_config(clinic, fake_twilio)
    ok = clinic.run("--config", str(config), "check")
    assert ok.exit_code == 0 and ok.stdout.startswith("ok:"), ok.output
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")
    bad = clinic.run("--config", str(config), "check")
    assert bad.exit_code == 2
    assert bad.stdout.strip() == ("problem: sms: Twilio refused the credentials or account (HTTP 401, "
                                  "code 20003); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    fake_twilio.problems.clear()  # the 401 was the point
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    lines = clinic.run("--config", str(config), "check").stdout.strip().splitlines()
    assert lines == ["problem: sms: TWILIO_ACCOUNT_SID is malformed; it is AC followed by 32 "
                     "lowercase hex digits",
                     "problem: sms: TWILIO_AUTH_TOKEN is not set; export it in the daemon's "
                     "environment"]
    refused = clinic.run("--config", str(config), "run")
    assert refused.exit_code == 2 and "run `aftercare check`" in refused.stderr


def test_daemon_refuses_to_start_when_twilio_is_unreachable(clinic: Clinic,
                                                           fake_twilio: FakeTwilio) -> None:
    config = twilio_config(clinic, fake_twilio)
    fake_twilio.down()
    try:
        result = clinic.run("--config", str(config), "run")
    finally:
        fake_twilio.up()
    assert result.exit_code == 2
    assert result.stderr.startswith("error: setup: sms: cannot reach Twilio at http://127.0.0.1:")


def test_sends_respect_the_rate(fake_twilio: FakeTwilio) -> None:
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    settings = SmsConfig(provider="twilio", api_base_url=fake_twilio.url, **{"from": "+12125550100"})
    channel = TwilioSms(settings, fake_twilio.account_sid, fake_twilio.auth_token, limiter)
    for _ in range(3):
        channel.send(MESSAGE)
    assert waits == [0.25, 0.25] and len(fake_twilio.created) == 3


def test_check_passes_on_the_example_config_with_the_fakes(clinic: Clinic, fake_twilio: FakeTwilio,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from fakes.smtp import FakeSmtp

    example = Path(__file__).resolve().parents[1] / "config" / "aftercare.twilio-smtp.toml"
    with FakeSmtp(auth=("aftercare@lumiere.example", "relay-secret")) as relay:
        # Only where the services are differs from the example; everything else is as shipped.
        for key, value in {"DATABASE__URL": f"sqlite:///{clinic.db_path}",
                           "SMS__API_BASE_URL": fake_twilio.url, "EMAIL__HOST": relay.host,
                           "EMAIL__PORT": str(relay.port), "EMAIL__TLS": "none",
                           "SMTP_PASSWORD": "relay-secret"}.items():
            monkeypatch.setenv(f"AFTERCARE_{key}", value)
        result = clinic.run("--config", str(example), "check")
    assert result.exit_code == 0, result.output
    assert "sms via twilio; email via smtp" in result.stdout


def test_send_due_refuses_to_spend_attempts_without_credentials(clinic: Clinic,
                                                               fake_twilio: FakeTwilio,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    result = clinic.run("--config", str(config), "send-due")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: setup: sms: TWILIO_AUTH_TOKEN is not set")
    assert clinic.rows("SELECT max(attempts) FROM message") == [(0,)]
    assert fake_twilio.requests == []


def test_outgoing_sms_ask_for_receipts_at_the_public_url(clinic: Clinic,
                                                         fake_twilio: FakeTwilio) -> None:
    _enroll_due_now(clinic)
    config = twilio_config(clinic, fake_twilio)
    config.write_text(config.read_text() + '\n[web]\npublic_url = "https://ac.clinic.example/"\n',
                      encoding="utf-8")
    assert clinic.json("--config", str(config), "send-due")["sent"] == 1
    [create] = [r for r in fake_twilio.requests if r.method == "POST"]
    assert create.form["StatusCallback"] == "https://ac.clinic.example/twilio/status"
