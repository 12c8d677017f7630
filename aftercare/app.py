"""The application: settings, database, protocols, templates and channels wired together."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine
from sqlmodel import Session as DbSession

from aftercare.channels import Channel, Outgoing
from aftercare.channels.console import ConsoleChannel
from aftercare.clock import Clock, system_clock
from aftercare.config import Settings, config_path, load_settings
from aftercare.db import make_engine, require_schema
from aftercare.dispatch import Dispatcher
from aftercare.errors import SendError, UserError
from aftercare.planning import Planner
from aftercare.protocols import ProtocolBook
from aftercare.rendering import Renderer
from aftercare.triage import TriageRules
from aftercare.unsubscribe import secret_from_env


class UnavailableChannel(Channel):
    """Stands in for a channel whose setup is incomplete; `aftercare check` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def send(self, message: Outgoing) -> str:
        raise SendError(f"channel not set up: {self.reason}", permanent=False,
                        setup_problem=True)


def build_channels(settings: Settings, console: TextIO | None = None,
                   engine: Engine | None = None) -> dict[str, Channel]:
    """The configured channels, with their secrets from the environment (never from files).

    With `engine`, a provider's rate is kept in that database, shared by every sender on
    it; without, each process keeps its own.
    """
    channels: dict[str, Channel] = {"sms": ConsoleChannel("sms", console),
                                    "email": ConsoleChannel("email", console)}
    if settings.sms.provider == "twilio":
        # Imported only when configured: the Twilio client costs a command ~0.1 s to load.
        from aftercare.channels.rate_limit import SharedPace
        from aftercare.channels.twilio_sms import TwilioSms

        sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
        pace = SharedPace(engine, "sms", settings.sms.rate_per_second) if engine else None
        channels["sms"] = (TwilioSms(settings.sms, sid, token, pace,
                                     status_callback=settings.sms_status_callback)
                           if sid and token else
                           UnavailableChannel("sms", "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN unset"))
    if settings.email.provider == "smtp":
        from aftercare.channels.rate_limit import SharedPace
        from aftercare.channels.smtp_email import SmtpEmail

        try:
            secret = secret_from_env()
        except UserError:
            secret = None  # `aftercare check` reports it; emails keep the mailto link meanwhile
        rate = settings.email.rate_per_second
        channels["email"] = SmtpEmail(settings.email, settings.clinic,
                                      os.environ.get("AFTERCARE_SMTP_PASSWORD"),
                                      public_url=settings.web.public_url, secret=secret,
                                      pace=SharedPace(engine, "email", rate)
                                      if engine and rate else None)
    return channels


@dataclass
class App:
    """One configured aftercare instance; every CLI command goes through one of these."""

    settings: Settings
    engine: Engine
    protocols: ProtocolBook
    renderer: Renderer
    clock: Clock = system_clock
    console: TextIO | None = None  # where console channels print; None means stdout
    channels: dict[str, Channel] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = system_clock,
                      console: TextIO | None = None) -> App:
        messaging = settings.messaging
        app = cls(settings=settings, engine=make_engine(settings.database.url),
                  protocols=ProtocolBook.load(
                      clinic_folder=Path(messaging.protocols_dir) if messaging.protocols_dir
                      else None),
                  renderer=Renderer([Path(messaging.templates_dir)] if messaging.templates_dir
                                    else None),
                  clock=clock, console=console)
        app.channels = build_channels(settings, console, app.engine)
        return app

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, clock: Clock = system_clock,
                    console: TextIO | None = None) -> App:
        """Load the config (see `config_path` for where it is looked for) and build the app."""
        return cls.from_settings(load_settings(config_path(str(path) if path else None)),
                                 clock=clock, console=console)

    @contextmanager
    def db(self, actor: str | None = None) -> Iterator[DbSession]:
        """One unit of work on a schema this release understands: committed if the block
        ends normally, rolled back if it raises (library functions never commit).

        `actor` is who the history records for its changes: a staff member, "cli", or
        (by default) the service itself.
        """
        require_schema(self.engine)
        with DbSession(self.engine, expire_on_commit=False,
                       info={"actor": actor} if actor else None) as session:
            yield session
            session.commit()

    @cached_property
    def triage_rules(self) -> TriageRules:
        """The red-flag words replies are triaged by (the clinic's file, else the packaged one)."""
        path = self.settings.messaging.triage_file
        return TriageRules.load(Path(path) if path else None)

    def planner(self) -> Planner:
        return Planner.from_settings(self.settings, self.protocols, self.clock)

    def dispatcher(self, rng: random.Random | None = None) -> Dispatcher:
        return Dispatcher(self.engine, self.settings, self.protocols, self.renderer,
                          self.channels, rng or random.Random(), self.clock)
