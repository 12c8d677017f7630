"""Signing in and out. The login form is the one console page open to everyone."""

from __future__ import annotations

import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from aftercare.app import App
from aftercare.staff import LoginRefused, authenticate
from aftercare.web.console import i18n, sessions
from aftercare.web.console.base import (
    COOKIE,
    LOGIN_COOKIE,
    idle_limit,
    new_token,
    read_form,
    safe_next,
    set_cookie,
)


def _login_page(app: App, request: Request, *, email: str = "", error: str | None = None,
                status: int = 200) -> HTMLResponse:
    token = request.cookies.get(LOGIN_COOKIE) or new_token()
    lang = i18n.language_of(app.settings.messaging.default_locale)
    html = i18n.environment(lang).get_template("login.html").render(
        csrf=token, email=email, error=error, next=safe_next(request.query_params.get("next", "/")),
        clinic=app.settings.clinic.name, user=None)
    response = HTMLResponse(html, status_code=status)
    set_cookie(response, app, LOGIN_COOKIE, token, max_age=3600)
    return response


async def login_form(request: Request) -> Response:
    app: App = request.app.state.aftercare
    return _login_page(app, request)


async def login(request: Request) -> Response:
    app: App = request.app.state.aftercare
    form = await read_form(request, app.settings.web.max_body_bytes)
    email, password = str(form.get("email", "")).strip(), str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    lang = i18n.language_of(app.settings.messaging.default_locale)
    _ = i18n.Translator(lang).gettext
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(str(form.get("csrf", "")).encode(), expected.encode()):
        return _login_page(app, request, email=email, status=403, error=_(
            "The sign-in form expired; please try again."))
    if not email or not password:
        return _login_page(app, request, email=email, status=400,
                           error=_("Enter your email and your password."))

    def sign_in() -> tuple[str, str]:
        """(the new session's token, "") or ("", why the login was refused)."""
        with app.db() as db:
            try:
                user = authenticate(db, email, password, app.clock())
            except LoginRefused as refused:  # caught inside: the failure count is kept
                return "", refused.reason
            sessions.end_idle(db, app.clock(), idle_limit(app))
            return sessions.start(db, user, app.clock()), ""

    token, refusal = await run_in_threadpool(sign_in)
    if refusal:
        refusals = {
            "wrong": _("Wrong email or password."),
            "locked": _("Too many failed attempts: this account is locked for 15 minutes. "
                        "An admin can lift the lock by setting a new password."),
            "disabled": _("This account is disabled; ask an admin."),
        }
        return _login_page(app, request, email=email, status=401, error=refusals[refusal])
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, app, COOKIE, token, max_age=None)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    """Sign out: a POST with the session's CSRF token (another site cannot sign staff out)."""
    app: App = request.app.state.aftercare
    form = await read_form(request, app.settings.web.max_body_bytes)
    token = request.cookies.get(COOKIE, "")

    def end() -> bool:
        with app.db() as db:
            csrf = sessions.csrf_of(db, token)
            if csrf is not None and not hmac.compare_digest(str(form.get("csrf", "")).encode(),
                                                            csrf.encode()):
                return False
            sessions.end(db, token)
            return True

    if not await run_in_threadpool(end):
        return PlainTextResponse("This form is out of date or came from another site; you are "
                                 "still signed in.\n", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
