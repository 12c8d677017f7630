"""Clinic configuration: a TOML file, overridden by AFTERCARE_* environment variables."""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from aftercare.clock import zone
from aftercare.errors import UserError
from aftercare.quiet_hours import QuietHours

DEFAULT_CONFIG = Path("config/aftercare.toml")


def _e164(value: str) -> str:
    """`value` if empty or an E.164 number (how Twilio writes numbers), else a ValueError."""
    if value and not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise ValueError(f"'{value}' is not an E.164 number (e.g. +12125550100)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClinicConfig(_Section):
    name: str = Field("Aftercare Demo Clinic", min_length=1)
    phone: str = Field("+1 212 555 0100", min_length=3)
    email: str = "care@clinic.example"
    emergency_number: str = Field("911", min_length=2)
    timezone: str = "America/New_York"
    country: str = "US"
    booking_url: str = ""
    # Who is alerted at once when a patient's reply looks urgent (SMS and email).
    on_call_phone: str = ""
    alerts_email: str = ""

    @field_validator("on_call_phone")
    @classmethod
    def _on_call(cls, value: str) -> str:
        return _e164(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zone(value)
        except UserError as exc:
            raise ValueError(exc.problem) from None
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"'{value}' is not a two-letter country code (e.g. US, FR, GB)")
        return value.upper()


class MessagingConfig(_Section):
    default_locale: str = "en"
    quiet_start: time = time(20, 0)
    quiet_end: time = time(9, 0)
    # The clinic's own folders: a file there with a packaged file's name replaces it.
    templates_dir: str = ""
    protocols_dir: str = ""
    # The clinic's own triage words (config/triage.toml's format) instead of the packaged ones.
    triage_file: str = ""
    # How far after a course's last session maintenance reminders are planned.
    maintenance_horizon_days: int = Field(default=365, ge=0, le=1830)

    @field_validator("templates_dir", "protocols_dir")
    @classmethod
    def _folder(cls, value: str) -> str:
        if value and not Path(value).is_dir():
            raise ValueError(f"'{value}' is not a folder (relative paths start at the "
                             "working directory)")
        return value

    @field_validator("triage_file")
    @classmethod
    def _file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"'{value}' is not a file (relative paths start at the "
                             "working directory)")
        return value

    @property
    def quiet_hours(self) -> QuietHours:
        return QuietHours(self.quiet_start, self.quiet_end)


class DatabaseConfig(_Section):
    url: str = "sqlite:///aftercare.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql")):
            raise ValueError(
                f"'{value}' is not a supported database URL; use sqlite:///FILE.db or "
                "postgresql+psycopg://USER@HOST/DB"
            )
        return value


class SmsConfig(_Section):
    """Twilio settings; the account SID and auth token come only from the environment."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: Literal["console", "twilio"] = "console"
    from_: str = Field("", alias="from")
    messaging_service_sid: str = ""
    api_base_url: str = ""
    status_callback_url: str = ""
    timeout_seconds: float = Field(10, gt=0, le=120)
    # The Twilio account's rate in segments a second, shared by every daemon on the database.
    rate_per_second: float = Field(1.0, gt=0, le=1000)
    # Requests in flight at once; about rate_per_second times Twilio's answer time.
    concurrency: int = Field(8, ge=1, le=64)
    max_attempts: int = Field(5, ge=1, le=50)
    # Who answers STOP/START/HELP: aftercare (in the webhook's reply), or Twilio's own
    # Advanced Opt-Out (then aftercare records the keyword and answers nothing).
    keyword_replies: Literal["aftercare", "twilio"] = "aftercare"
    # How replies and receipts arrive: "webhook" (Twilio calls web.public_url) or "poll"
    # (the daemon asks Twilio, for clinics behind NAT). Empty: webhook when
    # web.public_url is set, else poll.
    inbound: Literal["", "webhook", "poll"] = ""

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _e164(value)

    @field_validator("messaging_service_sid")
    @classmethod
    def _mg_sid(cls, value: str) -> str:
        if value and not re.fullmatch(r"MG[0-9a-f]{32}", value):
            raise ValueError(f"'{value}' is not a Messaging Service SID (MG + 32 hex digits)")
        return value

    @field_validator("api_base_url", "status_callback_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_sender(self) -> SmsConfig:
        if self.provider == "twilio" and bool(self.from_) == bool(self.messaging_service_sid):
            raise ValueError("with provider = \"twilio\" set exactly one of `from` and "
                             "`messaging_service_sid`")
        return self


class EmailConfig(_Section):
    """SMTP settings; the password comes only from AFTERCARE_SMTP_PASSWORD."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: Literal["console", "smtp"] = "console"
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str = ""
    from_: str = Field("", alias="from")  # empty: clinic.email
    ca_file: str = ""  # trust only this CA file (a relay with its own certificate)
    timeout_seconds: float = Field(30, gt=0, le=300)
    # Emails in flight at once, each on a connection of its own (kept between emails).
    concurrency: int = Field(4, ge=1, le=32)
    # The relay's limit in emails a second, shared by every daemon on the database; 0: none.
    rate_per_second: float = Field(0, ge=0, le=1000)
    max_attempts: int = Field(5, ge=1, le=50)


class WebConfig(_Section):
    """`aftercare serve`: where it listens, and the public https URL that reaches it."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # What Twilio and mail clients reach (e.g. a reverse proxy with TLS): webhook
    # signatures are checked against it, and status callback URLs are built from it.
    public_url: str = ""
    # The largest request body accepted (Twilio's webhooks are a few kilobytes).
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=10 * 1024 * 1024)
    # The console signs a browser out after this many minutes without a request.
    session_minutes: int = Field(30, ge=1, le=24 * 60)
    # The largest CSV the console's import page accepts.
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"'{value}' is not an http(s) URL (e.g. https://aftercare.clinic.example)")
        return value.rstrip("/")


class TriageConfig(_Section):
    """What happens after an urgent reply."""

    # Alert the on-call contact again when nobody acknowledged an urgent reply by then.
    escalate_after_minutes: int = Field(15, ge=1, le=24 * 60)


class DaemonConfig(_Section):
    poll_seconds: float = Field(15, gt=0, le=3600)
    batch_size: int = Field(50, ge=1, le=10_000)
    lease_seconds: int = Field(300, ge=30)
    retry_base_seconds: float = Field(60, gt=0)
    retry_max_seconds: float = Field(3600, gt=0)


class Settings(BaseSettings):
    """Everything the service reads from configuration; secrets come only from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="AFTERCARE_", env_nested_delimiter="__", extra="forbid"
    )

    clinic: ClinicConfig = ClinicConfig()
    messaging: MessagingConfig = MessagingConfig()
    database: DatabaseConfig = DatabaseConfig()
    sms: SmsConfig = SmsConfig()
    email: EmailConfig = EmailConfig()
    daemon: DaemonConfig = DaemonConfig()
    web: WebConfig = WebConfig()
    triage: TriageConfig = TriageConfig()

    @property
    def sms_inbound(self) -> str:
        """"webhook" or "poll": how replies and delivery receipts reach aftercare."""
        if self.sms.inbound:
            return self.sms.inbound
        return "webhook" if self.web.public_url else "poll"

    @property
    def sms_status_callback(self) -> str:
        """Where Twilio reports delivery: `sms.status_callback_url` if set, else the
        service's own endpoint under `web.public_url`, else nowhere."""
        if self.sms.status_callback_url:
            return self.sms.status_callback_url
        return f"{self.web.public_url}/twilio/status" if self.web.public_url else ""

    @property
    def longest_send_seconds(self) -> float:
        """The longest one provider call may take: the longer channel timeout. (A wait for
        the rate comes before the call, and a long one renews the claim first.)"""
        return max(self.sms.timeout_seconds, self.email.timeout_seconds)

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        # A claim older than its lease is taken back; if one send can outlast the lease,
        # a slow send in flight could be taken back and sent twice. A send starts at most a
        # quarter lease after its claim was last renewed (longer waits renew it again).
        longest = self.longest_send_seconds
        if self.daemon.lease_seconds < 2 * longest:
            raise ValueError(f"daemon.lease_seconds ({self.daemon.lease_seconds}) must be at "
                             f"least {2 * longest:g}: twice the longest send (the longer of "
                             "sms.timeout_seconds and email.timeout_seconds)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so an admin can point one daemon elsewhere.
        return (env_settings, init_settings)


def config_path(explicit: str | None) -> Path | None:
    """The config file to read: --config, else AFTERCARE_CONFIG, else ./config/aftercare.toml."""
    chosen = explicit or os.environ.get("AFTERCARE_CONFIG")
    if chosen:
        return Path(chosen)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None) -> Settings:
    """Read and validate the configuration, or raise a one-line UserError."""
    data: dict[str, Any] = {}
    where = str(path) if path else "built-in defaults"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError("config", f"{path} does not exist; pass --config PATH") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError("config", f"{path} is not valid TOML ({exc})") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise UserError("config", _first_problem(exc, where)) from None


_SECRETS = {"account_sid": "TWILIO_ACCOUNT_SID", "auth_token": "TWILIO_AUTH_TOKEN",
            "password": "AFTERCARE_SMTP_PASSWORD", "secret_key": "AFTERCARE_SECRET_KEY"}


def _first_problem(exc: ValidationError, where: str) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    secret = _SECRETS.get(str(error["loc"][-1])) if error["loc"] else None
    if error["type"] == "extra_forbidden" and secret:
        problem = f"secrets are never read from files; set {secret} in the environment instead"
    elif error["type"] == "extra_forbidden":
        problem = "unknown key; check its spelling against config/aftercare.toml"
    else:
        problem = str(error["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    variable = "AFTERCARE_" + "__".join(str(part) for part in error["loc"]).upper()
    if variable in {name.upper() for name in os.environ}:
        where = f"environment variable {variable}"
    return f"{key + ': ' if key else ''}{problem} [{where}]{more}"
