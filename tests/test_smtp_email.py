"""Email through a real SMTP server (aiosmtpd on 127.0.0.1): headers, parts, TLS, outcomes."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import smtp as smtp_fakes
from fakes.smtp import FakeSmtp, TestCert, free_port

from aftercare.app import App
from aftercare.channels import Channel, Outgoing, smtp_email
from aftercare.channels.smtp_email import SmtpEmail
from aftercare.config import ClinicConfig, EmailConfig
from aftercare.errors import EMAIL_INVALID, SendError
from aftercare.unsubscribe import make_token
from conftest import Clinic, FixedClock, recover_at, run_at, utc

CLINIC = ClinicConfig(name="Lumiere Aesthetics", phone="+1 212 555 0100",
                      email="care@lumiere.example", emergency_number="911")
MESSAGE = Outgoing(message_id=42, channel="email", to="jane@example.com", patient_name="Jane Doe",
                   timezone="America/New_York", step="first_48h", text="Hi Jane,\n\nAll is well.",
                   subject="Lumiere Aesthetics: the first 48 hours",
                   html="<p>Hi Jane,</p><p>All is well.</p>",
                   at=utc("2026-03-02T11:30-05:00"))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TestCert:
    return TestCert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def relay() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


def _channel(server: FakeSmtp, password: str | None = None, *, public_url: str = "",
             secret: bytes | None = None, **config: object) -> SmtpEmail:
    settings = EmailConfig(provider="smtp", host=server.host, port=server.port,
                           tls=config.pop("tls", "none"), timeout_seconds=5, **config)
    return SmtpEmail(settings, CLINIC, password, public_url=public_url, secret=secret)


def test_email_has_both_parts_and_every_header(relay: FakeSmtp) -> None:
    provider_id = _channel(relay).send(MESSAGE)
    [got] = relay.received
    mail = got.message
    assert got.rcpt_tos == ["jane@example.com"] and got.mail_from == "care@lumiere.example"
    assert mail["Subject"] == "Lumiere Aesthetics: the first 48 hours"
    assert mail["From"] == "Lumiere Aesthetics <care@lumiere.example>"
    assert mail["To"] == "jane@example.com" and mail["Reply-To"] == "care@lumiere.example"
    assert mail["Date"] == "Mon, 02 Mar 2026 16:30:00 +0000"
    assert mail["Message-ID"] == "<aftercare.42@lumiere.example>" == provider_id
    assert mail["List-Unsubscribe"] == "<mailto:care@lumiere.example?subject=unsubscribe>"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and text.get_content().strip() == MESSAGE.text
    assert html is not None and "<p>All is well.</p>" in html.get_content()


KEY = b"test-only-secret-key-0123456789abcdef"
LONG_URL = "https://aftercare.a-rather-long-host-name.lumiere-aesthetics.example/clinic/one"


def test_one_click_unsubscribe_link_when_public_over_https(relay: FakeSmtp) -> None:
    _channel(relay, public_url=LONG_URL, secret=KEY).send(replace(MESSAGE, patient_id=7))
    [got] = relay.received
    token = make_token(7, utc("2026-03-02T11:30-05:00"), KEY)  # MESSAGE.at
    link = f"{LONG_URL}/unsubscribe/{token}"
    assert got.message["List-Unsubscribe"] == (
        f"<{link}>, <mailto:care@lumiere.example?subject=unsubscribe>")
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # On the wire the link is in clear, never RFC 2047-encoded however long it is.
    assert f"\r\nList-Unsubscribe: <{link}>,\r\n <mailto:".encode() in got.raw
    assert b"=?" not in got.raw


@pytest.mark.parametrize(("public_url", "secret", "patient_id"), [
    ("", KEY, 7), ("http://aftercare.clinic.example", KEY, 7),
    ("https://aftercare.clinic.example", None, 7), ("https://aftercare.clinic.example", KEY, None),
], ids=["no-public-url", "http-only", "no-secret", "no-patient"])
def test_mailto_only_without_an_https_link(relay: FakeSmtp, public_url: str,
                                           secret: bytes | None, patient_id: int | None) -> None:
    channel = _channel(relay, public_url=public_url, secret=secret)
    mail = channel.compose(replace(MESSAGE, patient_id=patient_id))
    assert mail["List-Unsubscribe"] == "<mailto:care@lumiere.example?subject=unsubscribe>"
    assert mail["List-Unsubscribe-Post"] is None  # RFC 8058 one-click needs https


def test_the_same_row_always_gets_the_same_message_id(relay: FakeSmtp) -> None:
    channel = _channel(relay)
    channel.send(MESSAGE)
    channel.send(MESSAGE)  # a resend after a crash
    ids = {r.message["Message-ID"] for r in relay.received}
    assert ids == {"<aftercare.42@lumiere.example>"}


def test_a_notice_never_shares_a_message_id_with_a_planned_message(relay: FakeSmtp) -> None:
    from dataclasses import replace

    channel = _channel(relay)
    alert = replace(MESSAGE, step="notice.alert")  # notice 42, not message 42
    assert channel.compose(alert)["Message-ID"] != channel.compose(MESSAGE)["Message-ID"]
    assert channel.compose(alert)["Message-ID"] == channel.compose(alert)["Message-ID"]


def test_starttls_with_login(cert: TestCert) -> None:
    with FakeSmtp(mode="starttls", cert=cert, auth=("clinic", "s3cret")) as server:
        _channel(server, "s3cret", tls="starttls", username="clinic",
                 ca_file=str(cert.cert_path)).send(MESSAGE)
        [got] = server.received
    assert got.tls and got.auth == ("clinic", "s3cret")


def test_implicit_tls(cert: TestCert) -> None:
    with FakeSmtp(mode="implicit", cert=cert) as server:
        _channel(server, tls="implicit", ca_file=str(cert.cert_path)).send(MESSAGE)
        assert server.received[0].tls


@pytest.mark.parametrize(
    ("server_args", "channel_args", "permanent", "code", "consequence"),
    [
        ({"rcpt_reply": "451 4.3.0 Try again later"}, {}, False, "451", None),
        ({"rcpt_reply": "550 5.1.1 No such user"}, {}, True, "550", EMAIL_INVALID),
        ({"data_reply": "554 5.6.0 Message refused"}, {}, True, "554", None),
        ({"data_reply": "451 4.3.0 Busy"}, {}, False, "451", None),
        ({"auth": ("clinic", "right")}, {"username": "clinic", "password": "wrong"}, False,
         "535", None),
    ],
    ids=["rcpt-451", "rcpt-550", "data-554", "data-451", "login-535"],
)
def test_replies_are_classified(server_args: dict, channel_args: dict, permanent: bool,
                                code: str, consequence: str | None) -> None:
    password = channel_args.pop("password", None)
    with FakeSmtp(**server_args) as server, pytest.raises(SendError) as caught:
        _channel(server, password, **channel_args).send(MESSAGE)
    error = caught.value
    assert (error.permanent, error.code, error.consequence) == (permanent, code, consequence)
    assert "jane@example.com" not in str(error)


def test_unreachable_or_misconfigured_relay_is_transient(cert: TestCert) -> None:
    down = EmailConfig(provider="smtp", host="127.0.0.1", port=free_port(), tls="none",
                       timeout_seconds=2)
    with pytest.raises(SendError) as caught:
        SmtpEmail(down, CLINIC, None).send(MESSAGE)
    assert not caught.value.permanent
    # A relay that demands STARTTLS, addressed without it: 530, our setup, not the patient's.
    with FakeSmtp(mode="starttls", cert=cert) as server, pytest.raises(SendError) as caught:
        _channel(server).send(MESSAGE)
    assert (caught.value.permanent, caught.value.code) == (False, "530")
    # A certificate nobody vouches for.
    with FakeSmtp(mode="starttls", cert=cert) as server, pytest.raises(SendError) as caught:
        _channel(server, tls="starttls").send(MESSAGE)
    assert not caught.value.permanent


def _smtp_config(clinic: Clinic, server: FakeSmtp, extra: str = "") -> Path:
    config = clinic.folder / "smtp.toml"
    config.write_text(clinic.config.read_text() + f"""
[email]
provider = "smtp"
host = "{server.host}"
port = {server.port}
tls = "none"
timeout_seconds = 5
{extra}""")
    return config


def test_dispatch_through_smtp_and_a_refused_address(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--email", "jane@example.com", "--ref", "J1")
    clinic.json("patient", "add", "--name", "Sam Roe", "--email", "nobody@example.com", "--ref", "S1")
    for ref in ("J1", "S1"):
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", ref, "--treatment", "cellulite",
                    "--session-at", "2026-03-02T10:30")

    with FakeSmtp() as server:
        config = _smtp_config(clinic, server)
        result = clinic.run("--config", str(config), "send-due", "--now", "2026-03-02T11:30-05:00",
                            "--json")
        assert result.exit_code == 0, result.output
        assert sorted(r.rcpt_tos[0] for r in server.received) == ["jane@example.com",
                                                                  "nobody@example.com"]
    with FakeSmtp(rcpt_reply="550 5.1.1 No such user") as server:
        config = _smtp_config(clinic, server)
        counts = clinic.json("--config", str(config), "send-due", "--now",
                             "2026-03-02T14:30-05:00")
    assert counts["failed"] == 2
    invalid = clinic.rows("SELECT ref FROM patient WHERE email_invalid_at IS NOT NULL ORDER BY ref")
    assert invalid == [("J1",), ("S1",)]
    pending = clinic.json("--config", str(config), "messages", "--status", "pending")
    assert pending == []  # nothing more is attempted on refused addresses
    failed = clinic.json("--config", str(config), "messages", "--status", "failed")
    assert {m["last_error"] for m in failed} == {"550: SMTP 550: recipient refused"}
    assert all(m["attempts"] == 1 for m in failed)


class Killed(BaseException):
    """Stands for the process dying: nothing in the dispatcher catches it."""


def test_interrupted_email_is_resent_with_the_same_message_id(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--email", "jane@example.com", "--ref", "J1")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30")
    now = utc("2026-03-02T11:30-05:00")
    with FakeSmtp() as server:
        clock = FixedClock(now)
        app = clinic.app(clock=clock, console=io.StringIO())
        real = _channel(server)

        class DiesAfterSending(Channel):
            name = "email"

            def send(self, message: Outgoing) -> str:
                real.send(message)  # the relay has it...
                raise Killed  # ...and the process dies before recording it

        app.channels["email"] = DiesAfterSending()
        dispatcher = app.dispatcher()
        with pytest.raises(Killed):
            run_at(dispatcher, now)
        assert clinic.rows("SELECT status FROM message WHERE step = 'first_48h'") == [("sending",)]
        app.channels["email"] = real
        later = clock.now = now + timedelta(seconds=app.settings.daemon.lease_seconds + 1)
        assert recover_at(dispatcher, later) == 1
        assert run_at(dispatcher, later).sent == 1
        ids = [r.message["Message-ID"] for r in server.received]
    assert len(ids) == 2 and len(set(ids)) == 1  # the relay can tell it is the same email
    assert clinic.rows("SELECT status, provider_id FROM message WHERE step = 'first_48h'") == [
        ("sent", ids[0])]


def test_check_reports_an_unreachable_relay(clinic: Clinic) -> None:
    with FakeSmtp() as server:
        config = _smtp_config(clinic, server)
        ok = clinic.run("--config", str(config), "check")
        assert ok.exit_code == 0 and ok.stdout.startswith("ok:"), ok.output
    bad = clinic.run("--config", str(config), "check")  # the relay is gone now
    assert bad.exit_code == 2
    [line] = bad.stdout.strip().splitlines()
    assert line.startswith("problem: email: cannot use SMTP 127.0.0.1:")


# -- one connection for many emails


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every connection the fake relays accept from now on, counted by the server (clear it
    after starting one: aiosmtpd connects once itself, to see that it is up)."""
    accepted: list[object] = []
    factory = smtp_fakes._Controller.factory

    def counting(controller: smtp_fakes._Controller) -> Any:
        accepted.append(made := factory(controller))
        return made

    monkeypatch.setattr(smtp_fakes._Controller, "factory", counting)
    return accepted


def _numbered(count: int) -> list[Outgoing]:
    return [replace(MESSAGE, message_id=n, to=f"p{n}@example.com") for n in range(1, count + 1)]


def test_emails_share_one_connection_logged_in_once(cert: TestCert,
                                                    connections: list[object]) -> None:
    with FakeSmtp(mode="starttls", cert=cert, auth=("clinic", "s3cret")) as server:
        connections.clear()
        channel = _channel(server, "s3cret", tls="starttls", username="clinic",
                           ca_file=str(cert.cert_path))
        for message in _numbered(5):
            channel.send(message)
        assert [r.rcpt_tos for r in server.received] == [[f"p{n}@example.com"] for n in
                                                         range(1, 6)]
        assert len(connections) == 1  # one TLS handshake and one login for all five
        channel.close()  # QUIT at shutdown; a later send opens a new connection
        channel.send(MESSAGE)
        assert len(server.received) == 6 and len(connections) == 2


def test_a_connection_the_relay_dropped_between_emails_is_replaced(
        relay: FakeSmtp, connections: list[object]) -> None:
    channel = _channel(relay)
    first, second = _numbered(2)
    channel.send(first)
    relay.stop()  # the relay restarts (or times the idle connection out) between emails
    relay.start()
    connections.clear()
    channel.send(second)  # fails on the dead connection before MAIL: sent on a new one
    assert [r.rcpt_tos[0] for r in relay.received] == ["p1@example.com", "p2@example.com"]
    assert len(connections) == 1


def test_a_connection_idle_too_long_is_not_reused(relay: FakeSmtp, connections: list[object],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    channel = _channel(relay)
    channel.send(MESSAGE)
    monkeypatch.setattr(smtp_email, "IDLE_SECONDS", 0.0)
    time.sleep(0.01)
    channel.send(MESSAGE)
    assert len(relay.received) == 2 and len(connections) == 2


def test_an_email_the_relay_may_have_accepted_is_never_resent(
        relay: FakeSmtp, connections: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    handle_data = smtp_fakes._Handler.handle_DATA
    broken = threading.Event()

    async def accepted_then_gone(handler: Any, server: Any, session: Any,
                                 envelope: Any) -> str:
        reply: str = await handle_data(handler, server, session, envelope)
        if broken.is_set():
            # The relay took the email, then the connection broke before its "250" left.
            server.transport.abort()  # at once: the reply is never written
        return reply

    # Before the connection exists: aiosmtpd looks its hooks up when a connection opens.
    monkeypatch.setattr(smtp_fakes._Handler, "handle_DATA", accepted_then_gone)
    channel = _channel(relay)
    first, second = _numbered(2)
    channel.send(first)
    broken.set()
    with pytest.raises(SendError) as caught:
        channel.send(second)  # on the kept connection, but the failure came after DATA
    assert not caught.value.permanent  # retried later, by the dispatcher's rules
    assert [r.rcpt_tos[0] for r in relay.received] == ["p1@example.com", "p2@example.com"]
    assert len(connections) == 1  # no second try on a new connection


def test_emails_from_several_threads_each_get_a_connection_of_their_own(
        relay: FakeSmtp, connections: list[object]) -> None:
    channel = _channel(relay)
    messages = _numbered(12)
    errors: list[BaseException] = []

    def send(part: list[Outgoing]) -> None:
        try:
            for message in part:
                channel.send(message)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(messages[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert sorted(r.rcpt_tos[0] for r in relay.received) == sorted(m.to for m in messages)
    assert 1 <= len(connections) <= 4  # one per email in flight at once, at most


def test_dispatch_sends_emails_through_workers_on_kept_connections(
        clinic: Clinic, connections: list[object]) -> None:
    for n in range(1, 7):
        clinic.json("patient", "add", "--name", f"Patient {n}", "--email", f"p{n}@example.com",
                    "--ref", f"P{n}")
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", f"P{n}", "--treatment",
                    "cellulite", "--session-at", "2026-03-02T10:30")
    with FakeSmtp() as server:
        connections.clear()
        config = _smtp_config(clinic, server, "concurrency = 2\n")
        now = utc("2026-03-02T11:30-05:00")
        app = App.from_config(config, clock=FixedClock(now), console=io.StringIO())
        dispatcher = app.dispatcher()
        assert run_at(dispatcher, now).sent == 6
        dispatcher.close()
        assert sorted(r.rcpt_tos[0] for r in server.received) == [
            f"p{n}@example.com" for n in range(1, 7)]
    assert 1 <= len(connections) <= 2  # two workers: two connections at most
