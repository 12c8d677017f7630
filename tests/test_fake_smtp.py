"""The fake SMTP servers behave like real ones, as seen by the standard library client."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from fakes.smtp import FakeSmtp, TestCert, free_port

SENDER = "care@lumiere.example"
PATIENT = "ana@patient.example"
CREDENTIALS = ("clinic", "s3cret")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TestCert:
    return TestCert(tmp_path_factory.mktemp("cert"))


def _trusting(cert: TestCert) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert.cert_path)


def _client(server: FakeSmtp, host: str = "localhost") -> smtplib.SMTP:
    return smtplib.SMTP(host, server.port, local_hostname="localhost", timeout=5)


def _message(to: str = PATIENT) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Lumière Aesthetics <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = "Your aftercare — day 2"
    msg.set_content("Avoid sun and saunas today.\n")
    msg.add_alternative("<p>Avoid <b>sun</b> and saunas today.</p>\n", subtype="html")
    return msg


def test_plain_send_is_received_and_parsed() -> None:
    with FakeSmtp() as server, _client(server) as client:
        assert server.host == "127.0.0.1"
        client.send_message(_message())

    [got] = server.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == [PATIENT]
    assert got.tls is False
    assert got.auth is None
    assert b"Subject:" in got.raw
    assert got.message["Subject"] == "Your aftercare — day 2"
    assert got.message["From"].addresses[0].display_name == "Lumière Aesthetics"
    assert got.message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in got.message.iter_parts()] == ["text/plain", "text/html"]
    plain = got.message.get_body(("plain",))
    html = got.message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Avoid sun and saunas today.\n"
    assert "<b>sun</b>" in html.get_content()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_starttls_verifies_against_the_test_cert(cert: TestCert, host: str) -> None:
    with FakeSmtp(mode="starttls", cert=cert) as server, _client(server, host) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=_trusting(cert))
        client.send_message(_message())

    assert server.received[0].tls is True
    assert server.received[0].message["To"] == PATIENT


def test_cert_verifies_under_x509_strict(cert: TestCert) -> None:
    """Python 3.13 turns VERIFY_X509_STRICT on by default; the certificate must pass it already."""
    context = _trusting(cert)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with FakeSmtp(mode="implicit", cert=cert) as server, _implicit_client(server, context) as client:
        assert client.noop()[0] == 250


def test_starttls_server_refuses_mail_without_starttls(cert: TestCert) -> None:
    with (FakeSmtp(mode="starttls", cert=cert) as server, _client(server) as client,
          pytest.raises(smtplib.SMTPSenderRefused) as refused):
        client.send_message(_message())
    assert refused.value.smtp_code == 530
    assert refused.value.smtp_error == b"Must issue a STARTTLS command first"
    assert server.received == []


def test_unknown_certificate_fails_verification(cert: TestCert) -> None:
    with (FakeSmtp(mode="starttls", cert=cert) as server, _client(server) as client,
          pytest.raises(ssl.SSLCertVerificationError)):
        client.starttls(context=ssl.create_default_context())


def _implicit_client(server: FakeSmtp, context: ssl.SSLContext, host: str = "localhost") -> smtplib.SMTP:
    return smtplib.SMTP_SSL(host, server.port, local_hostname="localhost", context=context, timeout=5)


def test_implicit_tls(cert: TestCert) -> None:
    with FakeSmtp(mode="implicit", cert=cert) as server, _implicit_client(server, _trusting(cert)) as client:
        client.send_message(_message())

    assert server.received[0].tls is True
    assert server.received[0].rcpt_tos == [PATIENT]


def test_plain_client_to_implicit_tls_times_out(cert: TestCert) -> None:
    """The server waits for a TLS ClientHello, the client for a banner: only the timeout ends it."""
    with (FakeSmtp(mode="implicit", cert=cert) as server,
          pytest.raises(smtplib.SMTPServerDisconnected, match="timed out")):
        smtplib.SMTP("127.0.0.1", server.port, local_hostname="localhost", timeout=0.3)


def test_tls_client_to_plain_server_fails_fast(cert: TestCert) -> None:
    with FakeSmtp() as server, pytest.raises(ssl.SSLError):
        _implicit_client(server, _trusting(cert))


@pytest.mark.parametrize("mode", ["none", "starttls", "implicit"])
def test_auth_with_right_credentials_is_recorded(cert: TestCert, mode: str) -> None:
    with FakeSmtp(mode=mode, cert=cert, auth=CREDENTIALS) as server:
        if mode == "implicit":
            client = _implicit_client(server, _trusting(cert), "127.0.0.1")
        else:
            client = _client(server, "127.0.0.1")
        with client:
            if mode == "starttls":
                client.starttls(context=_trusting(cert))
            assert client.login(*CREDENTIALS)[0] == 235
            client.send_message(_message())

    assert server.received[0].auth == CREDENTIALS
    assert server.received[0].tls is (mode != "none")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms(mechanism: str) -> None:
    with FakeSmtp(auth=CREDENTIALS) as server, _client(server) as client:
        client.ehlo()
        assert {"LOGIN", "PLAIN"} <= set(client.esmtp_features["auth"].split())
        client.user, client.password = CREDENTIALS
        authobject = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        assert client.auth(mechanism, authobject, initial_response_ok=False)[0] == 235


def test_auth_with_wrong_credentials_is_refused() -> None:
    with (FakeSmtp(auth=CREDENTIALS) as server, _client(server) as client,
          pytest.raises(smtplib.SMTPAuthenticationError) as refused):
        client.login("clinic", "wrong")
    assert refused.value.smtp_code == 535
    assert refused.value.smtp_error == b"5.7.8 Authentication credentials invalid"


def test_starttls_server_offers_auth_only_after_starttls(cert: TestCert) -> None:
    with (FakeSmtp(mode="starttls", cert=cert, auth=CREDENTIALS) as server, _client(server) as client,
          pytest.raises(smtplib.SMTPNotSupportedError)):
        client.login(*CREDENTIALS)


def test_auth_required_before_mail() -> None:
    with (FakeSmtp(auth=CREDENTIALS) as server, _client(server) as client,
          pytest.raises(smtplib.SMTPSenderRefused) as refused):
        client.send_message(_message())
    assert refused.value.smtp_code == 530
    assert refused.value.smtp_error == b"5.7.0 Authentication required"


@pytest.mark.parametrize("reply, code, text", [
    ("451 4.3.0 Try again later", 451, b"4.3.0 Try again later"),
    ("550 5.1.1 No such user", 550, b"5.1.1 No such user"),
])
def test_rcpt_reply(reply: str, code: int, text: bytes) -> None:
    with FakeSmtp(rcpt_reply=reply) as server, _client(server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(_message())
        assert client.noop()[0] == 250  # the session stays usable (smtplib sent RSET)
    assert refused.value.recipients == {PATIENT: (code, text)}
    assert server.received == []


@pytest.mark.parametrize("reply, code, text", [
    ("451 4.3.0 Try again later", 451, b"4.3.0 Try again later"),
    ("554 5.6.0 Message rejected", 554, b"5.6.0 Message rejected"),
])
def test_data_reply(reply: str, code: int, text: bytes) -> None:
    with (FakeSmtp(data_reply=reply) as server, _client(server) as client,
          pytest.raises(smtplib.SMTPDataError) as refused):
        client.send_message(_message())
    assert (refused.value.smtp_code, refused.value.smtp_error) == (code, text)
    assert server.received == []


def test_replies_can_change_while_running() -> None:
    with FakeSmtp(rcpt_reply="451 4.3.0 Try again later") as server, _client(server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(_message())
        server.rcpt_reply = None
        client.send_message(_message())
    assert len(server.received) == 1


def test_bad_arguments_are_rejected(cert: TestCert) -> None:
    with pytest.raises(ValueError, match="mode"):
        FakeSmtp(mode="ssl", cert=cert)
    with pytest.raises(ValueError, match="cert"):
        FakeSmtp(mode="starttls")
    with pytest.raises(ValueError, match="reply"):
        FakeSmtp(rcpt_reply="try again")


def test_stopped_server_refuses_connections() -> None:
    server = FakeSmtp()
    server.start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=2)


@pytest.mark.parametrize("mode", ["none", "starttls", "implicit"])
def test_stop_with_a_client_connected_is_quick(cert: TestCert, mode: str) -> None:
    server = FakeSmtp(mode=mode, cert=cert)
    server.start()
    client = _implicit_client(server, _trusting(cert)) if mode == "implicit" else _client(server)
    with client:
        if mode == "starttls":
            client.starttls(context=_trusting(cert))
        client.ehlo()
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_restart_binds_the_same_port() -> None:
    server = FakeSmtp()
    with server:
        port = server.port
    with server, _client(server) as client:
        assert server.port == port
        client.send_message(_message())
    assert len(server.received) == 1


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_a_message_sent_from_another_thread() -> None:
    with FakeSmtp() as server:
        def send() -> None:
            with _client(server) as client:
                client.send_message(_message())

        sender = threading.Thread(target=send)
        sender.start()
        [got] = server.wait_for(1, timeout=5)
        sender.join(5)
        assert got.rcpt_tos == [PATIENT]
        with pytest.raises(TimeoutError):
            server.wait_for(2, timeout=0.05)


def test_cert_files(cert: TestCert) -> None:
    assert cert.cert_path.name == "cert.pem" and cert.key_path.name == "key.pem"
    assert cert.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert Path(cert.key_path).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(cert.server_context(), ssl.SSLContext)
