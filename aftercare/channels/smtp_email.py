"""Email through an SMTP relay: plain text and HTML, stable Message-ID, clinic as sender,
and a one-click unsubscribe link (RFC 8058) when the service is reachable over https."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr
from typing import Any

from aftercare.channels import Channel, Outgoing
from aftercare.config import ClinicConfig, EmailConfig
from aftercare.errors import EMAIL_INVALID, SendError
from aftercare.unsubscribe import make_token

# The body RFC 8058 has mail providers POST to the List-Unsubscribe https link.
ONE_CLICK = "List-Unsubscribe=One-Click"


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
    """One SMTP session per email; classifies the relay's answers into SendError.

    With an https `public_url` (web.public_url) and the `secret` key (AFTERCARE_SECRET_KEY),
    every email to a known patient carries a signed one-click unsubscribe link; otherwise
    only the mailto one.
    """

    name = "email"

    def __init__(self, config: EmailConfig, clinic: ClinicConfig, password: str | None, *,
                 public_url: str = "", secret: bytes | None = None) -> None:
        self._config, self._clinic, self._password = config, clinic, password
        self.sender = config.from_ or clinic.email
        # RFC 8058: one-click unsubscribe links must be https.
        one_click = public_url.startswith("https://") and bool(secret)
        self._public_url = public_url.rstrip("/") if one_click else ""
        self._secret = secret if one_click else None

    def send(self, message: Outgoing) -> str:
        email = self.compose(message)
        try:
            with self._connect() as smtp:
                smtp.send_message(email)
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
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, context=context,
                                                  timeout=config.timeout_seconds)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
        try:
            if config.tls == "starttls":
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, self._password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp
