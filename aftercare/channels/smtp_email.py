"""Email through an SMTP relay: plain text and HTML, stable Message-ID, clinic as sender,
and a one-click unsubscribe link (RFC 8058) when the service is reachable over https."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr
from typing import Any

from aftercare.channels import Channel, Outgoing
from aftercare.channels.rate_limit import Pace, RateLimiter
from aftercare.config import ClinicConfig, EmailConfig
from aftercare.errors import EMAIL_INVALID, SendError
from aftercare.unsubscribe import make_token

log = logging.getLogger(__name__)

# The body RFC 8058 has mail providers POST to the List-Unsubscribe https link.
ONE_CLICK = "List-Unsubscribe=One-Click"
# A connection unused for longer is closed, not reused: relays and firewalls drop idle
# connections (often silently, and the next command would then wait out the timeout).
IDLE_SECONDS = 30.0


class _Policy(EmailPolicy):
    """email.policy.default, except that List-Unsubscribe is written exactly as composed.

    The standard folding turns a word longer than a line (an unsubscribe link usually is)
    into RFC 2047 encoded words, and mail providers do not read those as links (RFC 2369
    links are never encoded). So `compose` folds that header itself, at the comma.
    """

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if name.lower() == "list-unsubscribe" and isinstance(value, str):
            unfolded = value.replace("\r\n ", " ")
            if not unfolded.isascii():  # e.g. an internationalised clinic address
                return super().header_store_parse(name, unfolded)
            if "\r" in unfolded or "\n" in unfolded:
                raise ValueError("List-Unsubscribe may be folded only before a space")
            return (name, value)
        return super().header_store_parse(name, value)


# refold_source="none": headers stored as text (only List-Unsubscribe) are written as stored.
_POLICY = _Policy(refold_source="none")


class SmtpEmail(Channel):
    """Emails through the relay, several at once (`email.concurrency`), each connection
    logged in once and reused for the emails that follow; classifies the relay's answers
    into SendError.

    With an https `public_url` (web.public_url) and the `secret` key (AFTERCARE_SECRET_KEY),
    every email to a known patient carries a signed one-click unsubscribe link; otherwise
    only the mailto one. `pace`: the relay's rate (the app gives the shared one when
    `email.rate_per_second` is set); by default this process's own, if a rate is set.
    """

    name = "email"

    def __init__(self, config: EmailConfig, clinic: ClinicConfig, password: str | None, *,
                 public_url: str = "", secret: bytes | None = None,
                 pace: Pace | None = None) -> None:
        self._config, self._clinic, self._password = config, clinic, password
        self.sender = config.from_ or clinic.email
        # RFC 8058: one-click unsubscribe links must be https.
        one_click = public_url.startswith("https://") and bool(secret)
        self._public_url = public_url.rstrip("/") if one_click else ""
        self._secret = secret if one_click else None
        self.concurrency = config.concurrency
        self.pace = pace or (RateLimiter(config.rate_per_second) if config.rate_per_second
                             else None)
        # Connections between two emails, each with the monotonic time it was last used.
        # One connection carries one email at a time (smtplib is not thread-safe).
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()

    def send(self, message: Outgoing) -> str:
        self.wait_turn(message)
        email = self.compose(message)
        try:
            self._deliver(email)
        except smtplib.SMTPRecipientsRefused as exc:
            code, _ = next(iter(exc.recipients.values()))
            if code >= 500:
                raise SendError(f"SMTP {code}: recipient refused", permanent=True,
                                code=str(code), consequence=EMAIL_INVALID) from None
            raise SendError(f"SMTP {code}: recipient deferred", permanent=False,
                            code=str(code)) from None
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused) as exc:
            # Login, TLS or sender refused: a setup problem, not this message's. Keep it
            # until the setup is fixed (`aftercare check` says what is wrong).
            raise SendError(f"SMTP {exc.smtp_code}: relay refused our login or sender",
                            permanent=False, code=str(exc.smtp_code),
                            setup_problem=True) from None
        except smtplib.SMTPResponseException as exc:
            raise SendError(f"SMTP {exc.smtp_code}: {'refused' if exc.smtp_code >= 500 else 'deferred'}",
                            permanent=exc.smtp_code >= 500, code=str(exc.smtp_code)) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"network: {type(exc).__name__}", permanent=False) from None
        return str(email["Message-ID"])

    def _deliver(self, email: EmailMessage) -> None:
        """Hand `email` to the relay once, on an idle connection or a new one."""
        smtp, reused = self._take()
        try:
            try:
                smtp.send_message(email)
            except (smtplib.SMTPException, OSError) as exc:
                if not (reused and _before_data(smtp, exc)):
                    raise
                # The relay closed the idle connection (or will take no more mail on it)
                # before this email's DATA: none of it reached the relay, so it goes once
                # more, on a new connection. After DATA it may have been accepted: never.
                log.debug("email: the relay dropped a kept connection (%s); reconnecting",
                          type(exc).__name__)
                _close(smtp)
                smtp = self._connect()
                smtp.send_message(email)
        except BaseException:
            _close(smtp)  # where the conversation stands is unknown: not reused
            raise
        with self._lock:
            self._idle.append((smtp, time.monotonic()))

    def _take(self) -> tuple[smtplib.SMTP, bool]:
        """A connection for one email, and whether it was kept from an earlier one: the
        most recently used idle one, unless it has been idle too long (then a new one)."""
        stale: list[smtplib.SMTP] = []
        with self._lock:
            if self._idle and time.monotonic() - self._idle[-1][1] <= IDLE_SECONDS:
                return self._idle.pop()[0], True
            # The most recent one is too old (or there is none): the others are older still.
            stale, self._idle = [smtp for smtp, _since in self._idle], []
        for smtp in stale:
            _close(smtp)
        return self._connect(), False

    def close(self) -> None:
        """Say QUIT on every idle connection (daemon shutdown)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for smtp, _since in idle:
            with contextlib.suppress(OSError):  # SMTPException is an OSError
                smtp.quit()
            _close(smtp)

    def compose(self, message: Outgoing) -> EmailMessage:
        """The email for `message`; the same row always gets the same Message-ID."""
        email = EmailMessage(policy=_POLICY)
        email["Subject"] = message.subject or self._clinic.name
        email["From"] = formataddr((self._clinic.name, self.sender))
        email["To"] = message.to
        email["Reply-To"] = self._clinic.email
        now = message.at or datetime.now(UTC)
        email["Date"] = format_datetime(now)
        # Derived from the row, so a resend after a crash is recognisably the same email;
        # a notice (an alert to the clinic) is a row of another table: its own namespace.
        row = (f"{message.step}.{message.message_id}" if message.step.startswith("notice.")
               else str(message.message_id))
        email["Message-ID"] = f"<aftercare.{row}@{self.sender.rpartition('@')[2]}>"
        mailto = f"<mailto:{self._clinic.email}?subject=unsubscribe>"
        link = self.unsubscribe_link(message.patient_id, now)
        if link:
            email["List-Unsubscribe"] = f"<{link}>,\r\n {mailto}"
            email["List-Unsubscribe-Post"] = ONE_CLICK
        else:
            email["List-Unsubscribe"] = mailto
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

    def unsubscribe_link(self, patient_id: int | None, now: datetime) -> str | None:
        """The signed https link that opts `patient_id` out of email, issued at `now`; None
        when one-click unsubscribe is not set up or the patient is not known."""
        if self._secret is None or patient_id is None:
            return None
        return f"{self._public_url}/unsubscribe/{make_token(patient_id, now, self._secret)}"

    def check(self) -> list[str]:
        """Problems reaching or logging in to the relay; empty when it works."""
        try:
            with self._connect():
                pass
        except smtplib.SMTPAuthenticationError as exc:
            return [f"email: {self._where()} refused the login of '{self._config.username}' "
                    f"(SMTP {exc.smtp_code}); check AFTERCARE_SMTP_PASSWORD"]
        except (smtplib.SMTPException, OSError) as exc:
            return [f"email: cannot use {self._where()} ({type(exc).__name__}: {exc}); check "
                    "email.host, email.port and email.tls"]
        return []

    def _where(self) -> str:
        return f"SMTP {self._config.host}:{self._config.port} ({self._config.tls})"

    def _connect(self) -> smtplib.SMTP:
        config = self._config
        context = ssl.create_default_context(cafile=config.ca_file or None)
        if config.tls == "implicit":
            smtp: smtplib.SMTP = _SmtpSsl(config.host, config.port, context=context,
                                          timeout=config.timeout_seconds)
        else:
            smtp = _Smtp(config.host, config.port, timeout=config.timeout_seconds)
        try:
            if config.tls == "starttls":
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, self._password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


class _Smtp(smtplib.SMTP):
    """smtplib's client, remembering the last command it sent (for `_before_data`)."""

    last_command = ""

    def putcmd(self, cmd: str, args: str = "") -> None:
        self.last_command = cmd.lower()
        super().putcmd(cmd, args)


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    """`_Smtp` over implicit TLS."""


def _before_data(smtp: smtplib.SMTP, exc: BaseException) -> bool:
    """Whether `exc` says the connection was gone (or closing: 421) before the email's DATA
    command was sent, so the relay cannot have accepted any of it."""
    if getattr(smtp, "last_command", "data") not in ("mail", "rcpt", "rset", "noop"):
        return False
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code == 421 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    # (SMTPException is an OSError too: only a disconnection or a socket error counts here.)
    return isinstance(exc, smtplib.SMTPServerDisconnected) \
        or not isinstance(exc, smtplib.SMTPException)


def _close(smtp: smtplib.SMTP) -> None:
    """Drop a connection without a word (it may be dead: QUIT could wait out the timeout)."""
    with contextlib.suppress(OSError):
        smtp.close()
