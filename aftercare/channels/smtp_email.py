"""Email through an SMTP relay: plain text and HTML, stable Message-ID, clinic as sender."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from aftercare.channels import Channel, Outgoing
from aftercare.config import ClinicConfig, EmailConfig
from aftercare.errors import EMAIL_INVALID, SendError


class SmtpEmail(Channel):
    """One SMTP session per email; classifies the relay's answers into SendError."""

    name = "email"

    def __init__(self, config: EmailConfig, clinic: ClinicConfig, password: str | None) -> None:
        self._config, self._clinic, self._password = config, clinic, password
        self.sender = config.from_ or clinic.email

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
        email = EmailMessage()
        email["Subject"] = message.subject or self._clinic.name
        email["From"] = formataddr((self._clinic.name, self.sender))
        email["To"] = message.to
        email["Reply-To"] = self._clinic.email
        email["Date"] = format_datetime(message.at or datetime.now(UTC))
        # Derived from the row, so a resend after a crash is recognisably the same email.
        email["Message-ID"] = f"<aftercare.{message.message_id}@{self.sender.rpartition('@')[2]}>"
        email["List-Unsubscribe"] = f"<mailto:{self._clinic.email}?subject=unsubscribe>"
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

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
