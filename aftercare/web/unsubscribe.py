"""One-click unsubscribe (RFC 8058): the https link in every email's List-Unsubscribe header.

GET shows a page with a button and changes nothing (mail scanners follow links); POST, from
that button or straight from the mail provider (body `List-Unsubscribe=One-Click`), opts
the patient out of email through the one consent rule. A forged, expired or malformed link
changes nothing; a link for a patient who is gone answers the same as any good link.
"""

from __future__ import annotations

import html
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from aftercare.app import App
from aftercare.errors import UserError
from aftercare.models import Patient
from aftercare.patients import set_opt_out
from aftercare.unsubscribe import SECRET_ENV, InvalidToken, read_token, secret_from_env
from aftercare.web.limits import read_body

log = logging.getLogger(__name__)

SOURCE = "one-click unsubscribe"

# The pages load nothing and run nothing; the token in the URL must not leak to other sites.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
    "Cache-Control": "no-store",
}


async def form(request: Request) -> Response:
    """The page behind the link: what will happen, and a button that POSTs to this URL."""
    app: App = request.app.state.aftercare
    verified = _verify(app, request.path_params["token"])
    if isinstance(verified, Response):
        return verified
    clinic = app.settings.clinic
    return _page(app, f"Stop emails from {clinic.name}?", [
        f"Press the button to stop aftercare emails from {clinic.name}. Text messages are "
        "not affected.",
    ], button=True)


async def confirm(request: Request) -> Response:
    """Opt the link's patient out of email: the button's POST or the mail provider's
    RFC 8058 one (`List-Unsubscribe=One-Click`); doing it twice changes nothing more."""
    app: App = request.app.state.aftercare
    # Its content does not matter (the link is the authority), only its size.
    await read_body(request, app.settings.web.max_body_bytes)
    verified = _verify(app, request.path_params["token"])
    if isinstance(verified, Response):
        return verified
    await run_in_threadpool(_opt_out, app, verified)
    clinic = app.settings.clinic
    # The same page whether or not the patient still exists: the link reveals nothing.
    return _page(app, "You are unsubscribed", [
        f"You will no longer receive aftercare emails from {clinic.name}.",
    ])


def _verify(app: App, token: str) -> int | Response:
    """The patient id the link stands for, or the page refusing it."""
    clinic = app.settings.clinic
    how = f"To stop emails, write to {clinic.email} or call {clinic.phone}."
    try:
        secret = secret_from_env()
        if secret is None:
            raise UserError(SECRET_ENV, "is not set")
        return read_token(token, app.clock(), secret)
    except UserError as exc:
        log.error("unsubscribe link refused: one-click unsubscribe is not set up (%s)", exc)
        return _page(app, "This link cannot be used", [
            "Unsubscribing by link is not available right now.", how], status=403)
    except InvalidToken as exc:
        log.warning("unsubscribe link refused: %s", exc.reason)
        return _page(app, "This link cannot be used", [
            "This unsubscribe link is not valid or has expired.", how], status=400)


def _opt_out(app: App, patient_id: int) -> None:
    """Opt the patient out of email in one unit of work; nobody on file, nothing changes."""
    with app.db() as db:
        patient = db.get(Patient, patient_id, with_for_update=True)
        if patient is None or patient.forgotten_at is not None:
            log.info("unsubscribe link for a patient no longer on file: nothing to change")
            return
        already = patient.email_opted_out_at is not None
        set_opt_out(db, app.planner(), patient, "email", True, source=SOURCE)
    log.info("unsubscribe link used: %s", "already opted out of email" if already
             else "email opt-out recorded")
    log.debug("unsubscribe link used by patient %s", patient_id)


def _page(app: App, title: str, paragraphs: list[str], *, button: bool = False,
          status: int = 200) -> Response:
    """A small self-contained HTML page; every text in it is escaped."""
    clinic = app.settings.clinic
    esc = html.escape
    parts = [f"<p>{esc(text)}</p>" for text in paragraphs]
    if button:
        # No action: the form posts back to this very URL, as RFC 8058's POST does.
        parts.append('<form method="post">'
                     '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                     '<button type="submit">Unsubscribe</button></form>')
    parts.append(f"<p>Questions about your treatment? Call {esc(clinic.name)} at "
                 f"{esc(clinic.phone)}.</p>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex\">"
            f"<title>{esc(title)}</title></head>\n<body><h1>{esc(title)}</h1>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return HTMLResponse(page, status_code=status, headers=_HEADERS)
