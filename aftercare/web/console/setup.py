"""Setup check (admin): what `aftercare check` reports, and the settings that matter."""

from __future__ import annotations

import os

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.app import App
from aftercare.checks import setup_problems
from aftercare.unsubscribe import SECRET_ENV
from aftercare.web.console.base import Page, page

# Secrets are never shown: only whether the environment has them.
SECRETS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "AFTERCARE_SMTP_PASSWORD", SECRET_ENV)


def effective_settings(app: App) -> list[tuple[str, str]]:
    """(setting, value) for the settings staff ask about, without any secret."""
    s = app.settings
    sms_from = s.sms.from_ or s.sms.messaging_service_sid
    return [
        ("clinic.name", s.clinic.name),
        ("clinic.phone", s.clinic.phone),
        ("clinic.email", s.clinic.email),
        ("clinic.emergency_number", s.clinic.emergency_number),
        ("clinic.timezone", s.clinic.timezone),
        ("clinic.country", s.clinic.country),
        ("clinic.on_call_phone", s.clinic.on_call_phone),
        ("clinic.alerts_email", s.clinic.alerts_email),
        ("messaging.default_locale", s.messaging.default_locale),
        ("messaging.locales", ", ".join(app.renderer.locales())),
        ("messaging.quiet_hours", f"{s.messaging.quiet_start:%H:%M}-{s.messaging.quiet_end:%H:%M}"),
        ("sms.provider", s.sms.provider),
        ("sms.from", sms_from),
        ("sms.inbound", s.sms_inbound),
        ("sms.status_callback", s.sms_status_callback),
        ("email.provider", s.email.provider),
        ("email.host", f"{s.email.host}:{s.email.port} ({s.email.tls})"
         if s.email.provider == "smtp" else ""),
        ("email.from", s.email.from_ or s.clinic.email),
        ("web.public_url", s.web.public_url),
        ("web.session_minutes", str(s.web.session_minutes)),
        ("triage.escalate_after_minutes", str(s.triage.escalate_after_minutes)),
        ("database.url", app.engine.url.render_as_string(hide_password=True)),
    ]


def secrets_present() -> list[tuple[str, bool]]:
    """Which secret environment variables are set (their values are never read out)."""
    return [(name, bool(os.environ.get(name))) for name in SECRETS]


def _show(current: Page, *, live: bool) -> Response:
    app = current.app
    problems = setup_problems(app, live=live)
    return current.render("setup.html", nav="users", problems=problems, live=live,
                          settings=effective_settings(app), secrets=secrets_present())


@page("admin")
def setup_page(current: Page) -> Response:
    """The offline check: config, database, content, credentials present (no network)."""
    return _show(current, live=False)


@page("admin")
def setup_live(current: Page) -> Response:
    """The full check, which also asks Twilio and the SMTP relay (a button, never by default)."""
    return _show(current, live=True)


routes: list[BaseRoute] = [
    Route("/setup", setup_page, methods=["GET"]),
    Route("/setup", setup_live, methods=["POST"]),
]
