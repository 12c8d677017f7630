"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1 with plain, STARTTLS or implicit TLS.

A `FakeSmtp` records every accepted message in `received`; it can require AUTH and answer
RCPT TO or DATA with a scripted refusal. `TestCert` makes the self-signed certificate
that the TLS modes serve and that clients trust through `cafile=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import ipaddress
import logging
import re
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
MODES = ("none", "starttls", "implicit")
STOP_TIMEOUT = 5.0  # seconds stop() waits for the server thread before abandoning it (daemon thread)
_REPLY = re.compile(r"[2-5]\d\d( .*)?")

# aiosmtpd 1.4.6 logs this warning on every successful AUTH (its own internal use); keep test logs clean.
logging.getLogger("mail.log").addFilter(
    lambda record: not record.getMessage().startswith("Session.login_data is deprecated"))


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it; parallel-safe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class TestCert:
    """A self-signed CA certificate for "localhost" and 127.0.0.1, valid one day, as PEM files.

    Writes `cert.pem` and `key.pem` into `folder`; clients trust it with `cafile=cert_path`.
    """

    __test__ = False  # the name starts with "Test"; tell pytest this is not a test class

    def __init__(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.cert_path: Path = folder / "cert.pem"
        self.key_path: Path = folder / "key.pem"
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aftercare tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ])
        now = datetime.now(UTC)
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False)
        alt_names: list[x509.GeneralName] = [
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
        # CA and server certificate in one; the extensions satisfy OpenSSL's X509_STRICT checks
        # (default since Python 3.13): critical basicConstraints, keyCertSign, SKI and AKI.
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        """A fresh server-side context serving this certificate (no client certificates asked)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@dataclass
class Received:
    """One message the server accepted (250 after DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes  # the message as received (CRLF line ends, dot-unstuffed)
    message: EmailMessage  # `raw` parsed with email.policy.default (line ends as "\n")
    tls: bool  # whether the session was encrypted (STARTTLS or implicit)
    auth: tuple[str, str] | None  # (username, password) when the client authenticated


def _parse(raw: bytes) -> EmailMessage:
    """Parse with email.policy.default; line ends become "\n" so body text compares naturally."""
    parser = BytesParser(_class=EmailMessage, policy=email.policy.default)
    message: EmailMessage = parser.parsebytes(raw.replace(b"\r\n", b"\n"))
    return message


class _Handler:
    """aiosmtpd hooks: scripted RCPT/DATA replies, credential check, recording."""

    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.fake.rcpt_reply is not None:
            return self.fake.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fake.data_reply is not None:
            return self.fake.data_reply
        raw = envelope.original_content or b""
        transport = server.transport
        tls = session.ssl is not None or (
            transport is not None and transport.get_extra_info("ssl_object") is not None)
        auth = session.auth_data if session.authenticated else None
        self.fake._record(Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            message=_parse(raw),
            tls=tls,
            auth=auth,
        ))
        return "250 OK"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """aiosmtpd `authenticator`: LOGIN/PLAIN give a LoginPassword; a mismatch answers 535."""
        if isinstance(auth_data, LoginPassword):
            given = (auth_data.login.decode("utf-8", "replace"),
                     auth_data.password.decode("utf-8", "replace"))
            if given == self.fake.auth:
                return AuthResult(success=True, auth_data=given)
        return AuthResult(success=False, handled=False)  # -> "535 5.7.8 Authentication credentials invalid"


class _Controller(Controller):
    """A Controller serving on a socket bound beforehand, that can stop without hanging."""

    def __init__(self, handler: _Handler, sock: socket.socket, *, auth_over_plain: bool,
                 **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock
        self._auth_over_plain = auth_over_plain
        self.connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _create_server(self) -> Any:
        # The socket is already bound (no race between choosing a port and binding it).
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        smtp = super().factory()
        if self._auth_over_plain:
            # aiosmtpd only counts STARTTLS as TLS: with implicit TLS (and for plain tests) AUTH would
            # get "538 Encryption required". Passing auth_require_tls=False instead warns on every
            # connection (UserWarning "Requiring AUTH while not requiring TLS"), so flip it here.
            smtp._auth_require_tls = False
        self.connections.add(smtp)
        return smtp

    def stop(self, no_assert: bool = False) -> None:
        """Drop open connections, end the loop and wait at most STOP_TIMEOUT for the thread."""
        thread = self._thread

        def shutdown() -> None:
            for smtp in list(self.connections):
                if isinstance(smtp.transport, asyncio.Transport):  # after STARTTLS: the TLS transport
                    smtp.transport.abort()
            self.cancel_tasks()

        with contextlib.suppress(RuntimeError):  # RuntimeError: loop closed, the thread has ended
            self.loop.call_soon_threadsafe(shutdown)
        if thread is not None:
            thread.join(STOP_TIMEOUT)
        self._thread = None
        self._cleanup()


class FakeSmtp:
    """A real SMTP server on 127.0.0.1 in a thread; use as a context manager or start()/stop().

    `rcpt_reply` / `data_reply` (e.g. "451 4.3.0 Try again later") may be changed while it runs.
    """

    def __init__(self, *, mode: str = "none", rcpt_reply: str | None = None, data_reply: str | None = None,
                 auth: tuple[str, str] | None = None, cert: TestCert | None = None, port: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode != "none" and cert is None:
            raise ValueError(f"mode {mode!r} needs a cert (TestCert)")
        for reply in (rcpt_reply, data_reply):
            if reply is not None and not _REPLY.fullmatch(reply):
                raise ValueError(f"a reply is a code and text, like '451 4.3.0 Try again later': {reply!r}")
        self.host = HOST
        self.port = port  # 0 until started; a restarted server binds the same port again
        self.mode = mode
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.auth = auth
        self.cert = cert
        self.received: list[Received] = []
        self._arrived = threading.Condition()
        self._controller: _Controller | None = None

    def start(self) -> None:
        """Bind (a free port unless `port` was given or already chosen) and serve until stop()."""
        if self._controller is not None:
            raise RuntimeError("FakeSmtp already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(16)
            sock.setblocking(False)
            handler = _Handler(self)
            kwargs: dict[str, Any] = {"server_hostname": "localhost", "ready_timeout": 5.0}
            if self.mode == "starttls":
                assert self.cert is not None
                kwargs.update(tls_context=self.cert.server_context(), require_starttls=True)
            elif self.mode == "implicit":
                assert self.cert is not None
                kwargs["ssl_context"] = self.cert.server_context()
            if self.auth is not None:
                kwargs.update(authenticator=handler.authenticate, auth_required=True)
            auth_over_plain = self.auth is not None and self.mode != "starttls"
            controller = _Controller(handler, sock, auth_over_plain=auth_over_plain, **kwargs)
        except BaseException:
            sock.close()
            raise
        self.port = controller.port
        try:
            controller.start()
        except BaseException:
            controller.stop()
            sock.close()
            raise
        self._controller = controller

    def stop(self) -> None:
        """Stop serving and close open connections; returns within seconds, idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` messages have arrived (for senders in other threads)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} messages arrived in {timeout} s")
            return list(self.received)

    def _record(self, received: Received) -> None:
        with self._arrived:
            self.received.append(received)
            self._arrived.notify_all()

    def __enter__(self) -> FakeSmtp:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
