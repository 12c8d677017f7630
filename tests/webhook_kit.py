"""A clinic that listens: Twilio's signing token and public URL set, and Jane enrolled after a
session, for tests of the webhooks and of what the service reports about itself."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from aftercare.app import App
from conftest import Clinic, FixedClock, utc

PUBLIC = "https://aftercare.clinic.example"
TOKEN = "0123456789abcdef0123456789abcdef"
PHONE = "+12125550123"
SESSION = utc("2026-03-02T10:30-05:00")


def listening_app(clinic: Clinic, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> App:
    """The clinic's app on `clock`, with webhooks set up and Jane (ref J1) enrolled at SESSION."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    clinic.config.write_text(clinic.config.read_text() + f'\n[web]\npublic_url = "{PUBLIC}"\n',
                             encoding="utf-8")
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", PHONE, "--email",
                "jane@example.com", "--ref", "J1")
    clinic.json("--now", (SESSION + timedelta(minutes=30)).isoformat(), "enroll", "J1",
                "--treatment", "cellulite", "--session-at", SESSION.isoformat())
    return clinic.app(clock=clock, console=io.StringIO())
