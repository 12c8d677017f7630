"""Setup checks: everything `aftercare check` reports and the daemon verifies before starting."""

from __future__ import annotations

import os

from aftercare.app import App
from aftercare.content_check import checked_content_problems
from aftercare.db import require_schema
from aftercare.errors import UserError
from aftercare.unsubscribe import secret_from_env


def setup_problems(app: App, *, live: bool = True) -> list[str]:
    """One line per problem; `live` also asks Twilio and the SMTP relay."""
    problems: list[str] = []
    try:
        require_schema(app.engine)
    except UserError as exc:
        problems.append(str(exc))
    if not list(app.protocols):
        problems.append("protocols: none found; the package's config/protocols is missing")
    problems += checked_content_problems(app.settings, app.protocols, app.renderer,
                                         app.engine.url)
    settings = app.settings
    if settings.sms.provider == "twilio":
        problems += credential_problems()
    try:
        secret_from_env()
    except UserError as exc:
        problems.append(str(exc))
    try:
        app.triage_rules  # noqa: B018  (loading is the check: a clinic's file may be broken)
    except UserError as exc:
        problems.append(str(exc))
    if settings.sms.inbound == "webhook" and not settings.web.public_url:
        problems.append("sms: sms.inbound is webhook but web.public_url is not set; set the "
                        "https URL Twilio reaches, or use inbound = \"poll\"")
    if settings.email.provider == "smtp" and settings.email.username \
            and not os.environ.get("AFTERCARE_SMTP_PASSWORD"):
        problems.append("email: email.username is set but AFTERCARE_SMTP_PASSWORD is not; "
                        "export it in the daemon's environment")
    if live and not problems:
        for channel in app.channels.values():
            problems += channel.check()
    return problems


def require_setup(app: App, *, live: bool = True) -> None:
    """Refuse to send with a broken setup: the first problem on one line, as a UserError."""
    problems = setup_problems(app, live=live)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError("setup", f"{problems[0]}{more}; run `aftercare check`")


def credential_problems() -> list[str]:
    """Twilio credentials as found in the environment (they are never read from files)."""
    from aftercare.channels.twilio_sms import ACCOUNT_SID  # the Twilio client loads with it

    problems = []
    sid = os.environ.get("TWILIO_ACCOUNT_SID", "")
    if not sid:
        problems.append("sms: TWILIO_ACCOUNT_SID is not set; export it in the daemon's "
                        "environment")
    elif not ACCOUNT_SID.fullmatch(sid):
        problems.append("sms: TWILIO_ACCOUNT_SID is malformed; it is AC followed by 32 "
                        "lowercase hex digits")
    if not os.environ.get("TWILIO_AUTH_TOKEN"):
        problems.append("sms: TWILIO_AUTH_TOKEN is not set; export it in the daemon's "
                        "environment")
    return problems
