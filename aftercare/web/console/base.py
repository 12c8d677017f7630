"""What every console page shares: the signed-in staff member, CSRF, roles, rendering.

A page is a plain synchronous function of a `Page` (run in the thread pool, as database
work is synchronous); `@page(role)` signs it in, checks the role and, for a POST, the form's
CSRF token before the function runs. Handlers stay thin: parse, call the library function
the CLI calls, render.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from sqlmodel import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aftercare.app import App
from aftercare.clock import zone
from aftercare.errors import UserError
from aftercare.models import StaffUser
from aftercare.staff import can
from aftercare.web.console import i18n, sessions
from aftercare.web.limits import read_body

log = logging.getLogger(__name__)

COOKIE = "aftercare_session"
LOGIN_COOKIE = "aftercare_login"  # double-submit CSRF token of the login form (no session yet)
PAGE_SIZE = 50


def N_(text: str) -> str:
    """Marks a string for the catalogue; it is translated where it is shown."""
    return text


ROLE_NAMES = {"frontdesk": N_("front desk"), "clinician": N_("clinician"), "admin": N_("admin")}

# No inline script or style, nothing from elsewhere, no framing, no referrer leaving a
# patient page; every page is private to the browser that asked for it.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Adds the security headers to every response of the service (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        message["headers"].append((name.encode(), value.encode()))
            await send(message)

        await self.app(scope, receive, with_headers)


class Forbidden(Exception):
    """The signed-in role may not do this; answered 403, nothing changed."""


def secure_cookies(app: App) -> bool:
    return app.settings.web.public_url.startswith("https://")


def set_cookie(response: Response, app: App, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=secure_cookies(app))


@dataclass
class Page:
    """One request to a console page, as its handler sees it."""

    request: Request
    app: App
    user: StaffUser
    session_id: int
    csrf: str
    flash: str | None
    form: FormData | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def lang(self) -> str:
        return i18n.language_of(self.user.locale or self.app.settings.messaging.default_locale)

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.app.settings.clinic.timezone)

    def _(self, text: str) -> str:
        """`text` in the reader's language (for strings made in Python, e.g. flash lines)."""
        return i18n.Translator(self.lang).gettext(text)

    @contextmanager
    def db(self) -> Iterator[DbSession]:
        """A unit of work whose history records this staff member."""
        with self.app.db(actor=self.user.email) as db:
            yield db

    def field(self, name: str, default: str = "") -> str:
        """A form field, stripped ("" when absent)."""
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def optional(self, name: str) -> str | None:
        return self.field(name) or None

    def request_key(self) -> str | None:
        """The key of this submission of a form that texts a patient (its hidden `once`
        field, made when the form was shown): the same form posted twice sends once."""
        once = self.field("once")
        return f"{self.session_id}:{once}" if re.fullmatch(r"[A-Za-z0-9_-]{16,43}", once) else None

    def upload(self, name: str) -> UploadFile | None:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, UploadFile) else None

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default).strip()

    def page_number(self) -> int:
        return page_param(self.query("page", "1")) or 1

    def require(self, role: str) -> None:
        if not can(self.user.role, role):
            raise Forbidden(role)

    def may(self, role: str) -> bool:
        return can(self.user.role, role)

    def refuse(self, error: UserError) -> None:
        """Remember a user error to show next to its field."""
        self.errors[error.field] = error.problem

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        env = i18n.environment(self.lang)
        html = env.get_template(template).render(
            page=self, user=self.user, csrf=self.csrf, flash=self.flash, errors=self.errors,
            when=i18n.when(self.lang, self.tz), day=i18n.day(self.lang, self.tz),
            can=self.may, url_with=self.url_with, once=lambda: secrets.token_urlsafe(16),
            role_name=self._(ROLE_NAMES.get(self.user.role, self.user.role)), **values)
        return HTMLResponse(html, status_code=status)

    def url_with(self, **changes: object) -> str:
        """This page's URL with some query parameters changed (e.g. the next page)."""
        params = dict(self.request.query_params)
        for name, value in changes.items():
            if value in (None, ""):
                params.pop(name, None)
            else:
                params[name] = str(value)
        return self.request.url.path + (f"?{urlencode(params)}" if params else "")

    def redirect(self, url: str, flash: str | None = None) -> RedirectResponse:
        """303 to `url` (post/redirect/get), with a one-line notice for that page."""
        if flash:
            with self.app.db() as db:
                sessions.leave_flash(db, self.session_id, flash)
        return RedirectResponse(url, status_code=303)

    def not_found(self, what: str) -> HTTPException:
        return HTTPException(404, what)


MAX_PAGE = 1_000_000  # past any list's end; a larger number is no database's offset


def page_param(text: str) -> int:
    """A page number from the query string (0 when absent or not a number)."""
    return min(max(1, int(text)), MAX_PAGE) if text.isdigit() else 0


Handler = Callable[[Page], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def idle_limit(app: App) -> timedelta:
    return timedelta(minutes=app.settings.web.session_minutes)


def page(role: str = "frontdesk", *, upload: bool = False) -> Callable[[Handler], Endpoint]:
    """Make `handler` a console endpoint that needs a signed-in `role` (or a higher one);
    with `upload`, its form may carry a file up to `web.max_upload_bytes`."""

    def wrap(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            app: App = request.app.state.aftercare
            # Who is asking, and may they, before a byte of the body is read.
            current = await run_in_threadpool(_sign_in, request, app)
            if isinstance(current, Response):
                return current
            if not current.may(role):
                _forbidden(current)
                return forbidden_page(current)
            if request.method == "POST":
                web = app.settings.web
                limit = web.max_upload_bytes if upload else web.max_body_bytes
                try:
                    current.form = await read_form(request, limit)
                except HTTPException as exc:
                    if exc.status_code != 413:
                        raise
                    return error_page(current, 413, current._(
                        "The form or file is larger than the console accepts; nothing was "
                        "changed.") + f" ({limit // 1024} KB)")
            try:
                return await run_in_threadpool(_handle, current, handler)
            finally:
                if current.form is not None:
                    await current.form.close()

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


async def read_form(request: Request, limit: int) -> FormData:
    """The posted form (urlencoded or multipart), refused with 413 past `limit` bytes."""
    body = await read_body(request, limit)
    # Starlette's parser reads the body again from the cache `read_body` filled.
    request._body = body
    try:
        return await request.form(max_files=1, max_fields=200)
    except (HTTPException, ValueError, KeyError) as exc:
        raise HTTPException(400, "the form could not be read") from exc


def _sign_in(request: Request, app: App) -> Page | Response:
    """The signed-in staff member's Page, or the redirect to the login page."""
    with app.db() as db:
        signed_in = sessions.resume(db, request.cookies.get(COOKIE, ""), app.clock(),
                                    idle_limit(app))
        if signed_in is not None:
            db.expunge(signed_in.user)
    if signed_in is None:
        if request.method == "GET":
            return RedirectResponse(f"/login?next={quote(_local(request))}", status_code=303)
        return RedirectResponse("/login", status_code=303)
    session = signed_in.session
    assert session.id is not None
    return Page(request=request, app=app, user=signed_in.user, session_id=session.id,
                csrf=session.csrf, flash=signed_in.flash)


def _handle(current: Page, handler: Handler) -> Response:
    request, form = current.request, current.form
    try:
        if form is not None and not hmac.compare_digest(
                str(form.get("csrf", "")).encode(), current.csrf.encode()):
            log.warning("console: %s %s refused, bad CSRF token (account %s)", request.method,
                        request.url.path, current.user.id)
            return error_page(current, 403, current._(
                "This form is out of date or came from another site; nothing was changed. "
                "Go back, reload the page and try again."))
        return handler(current)
    except Forbidden:
        _forbidden(current)
        return forbidden_page(current)
    except UserError as exc:
        return error_page(current, 400, str(exc))
    except OverflowError:  # an id or number no database column can hold: nobody's
        return error_page(current, 404, current._("Not found: no such record."))
    except HTTPException as exc:
        if exc.status_code == 404:
            return error_page(current, 404, current._("Not found: ") + str(exc.detail))
        raise


def _forbidden(current: Page) -> None:
    log.warning("console: %s %s forbidden for account %s (%s)", current.request.method,
                current.request.url.path, current.user.id, current.user.role)


def forbidden_page(current: Page) -> HTMLResponse:
    return error_page(current, 403, current._(
        "Your role does not allow this; nothing was changed. Ask a clinician or an admin."))


def error_page(current: Page, status: int, text: str) -> HTMLResponse:
    return current.render("error.html", status=status, message=text)


def _local(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(target: str) -> str:
    """A post-login destination on this site only (never `//elsewhere` or a scheme)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def new_token() -> str:
    return secrets.token_urlsafe(32)
