"""The console in a real browser: the real app served by uvicorn on 127.0.0.1 (a thread of
its own, its own event loop), a fixed clock, one staff account per role, and the system's
headless Chromium driven by Playwright's sync API (one browser a module, one context a test).

Without /usr/bin/chromium (AFTERCARE_CHROMIUM names another) the browser tests are
skipped, except in CI (AFTERCARE_REQUIRE_BROWSER=1), where a missing browser fails them.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

import pytest
import uvicorn

from aftercare import replies
from aftercare.app import App
from aftercare.enrollment import SessionVisit, enroll
from aftercare.models import Patient, Reply
from aftercare.patients import NewPatient, add_patient
from aftercare.web import create_app
from conftest import Clinic, FixedClock, utc
from console_kit import EMAILS, PASSWORDS, add_account

if TYPE_CHECKING:  # Playwright is imported when a browser test runs, not at collection
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response

CHROMIUM = os.environ.get("AFTERCARE_CHROMIUM", "/usr/bin/chromium")
# The system's Chromium (no browser download); no background connections: the CI machine's
# network refuses them, and they would only slow the start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000
NOW = utc("2026-12-01T15:00:00+00:00")  # 10:00 in New York, a Tuesday: as console_kit


def browser_required() -> bool:
    """CI sets AFTERCARE_REQUIRE_BROWSER=1: there, a missing browser is a failure."""
    return os.environ.get("AFTERCARE_REQUIRE_BROWSER", "") not in ("", "0")


def no_browser(reason: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) the browser tests, saying why."""
    if browser_required():
        pytest.fail(f"{reason} (AFTERCARE_REQUIRE_BROWSER is set: .ci/run installs chromium)")
    pytest.skip(f"{reason}; install Debian's chromium package to run the browser tests")


def launch(playwright: Playwright) -> Browser:
    """The system Chromium, headless."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a module's tests (each test gets its own context); closed
    with Playwright's driver after them, so no later test shares the thread with it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        no_browser(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        found = launch(playwright)
        try:
            yield found
        finally:
            found.close()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the test thread when it listens (no polling, no sleeps)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()  # also when it failed: the test then reports `started` False


@dataclass
class Live:
    """The console served over real HTTP on a free port of 127.0.0.1."""

    clinic: Clinic
    clock: FixedClock
    app: App
    url: str
    printed: io.StringIO  # what the console channels "sent"
    accounts: set[str] = field(default_factory=set)

    def at(self, path: str) -> str:
        return self.url + path

    def account(self, role: str) -> None:
        """The staff account of `role` (console_kit's emails and passwords)."""
        add_account(self.app, role, self.accounts)

    def patient(self, name: str, phone: str | None = "+1 212 555 0123",
                email: str | None = "jane@example.com") -> int:
        """A patient added through the CLI's library function; its id."""
        settings = self.app.settings
        with self.app.db("cli") as db:
            added = add_patient(db, NewPatient(name, phone=phone, email=email),
                                country=settings.clinic.country,
                                default_timezone=settings.clinic.timezone,
                                default_locale=settings.messaging.default_locale,
                                locales=self.app.renderer.locales(), clock=self.clock)
        assert added.id is not None
        return added.id

    def enroll(self, patient_id: int, next_session_at: datetime | None = None) -> int:
        """A cellulite session 1 (thighs) recorded an hour ago, as `aftercare enroll` does."""
        with self.app.db("cli") as db:
            patient = db.get(Patient, patient_id)
            assert patient is not None
            enroll(db, self.app.planner(), patient,
                   SessionVisit("cellulite", self.clock() - timedelta(hours=1), area="thighs",
                                next_session_at=next_session_at))
        return patient_id

    def reply(self, phone: str, body: str, minutes_ago: int = 0) -> Reply:
        """A patient's SMS, stored and settled as the webhook does (real triage)."""
        received = self.clock() - timedelta(minutes=minutes_ago)
        with self.app.db() as db:
            stored = replies.store(db, replies.Incoming(f"SM{received:%H%M%S}{len(body)}", phone,
                                                        "+12125550100", body), received)
            reply_id = stored.id
        assert reply_id is not None
        replies.settle(self.app, reply_id, queue=True)
        with self.app.db() as db:
            settled = db.get(Reply, reply_id)
            assert settled is not None
            return settled


@pytest.fixture
def live(clinic: Clinic) -> Iterator[Live]:
    """The real console app on uvicorn, in a background thread, at 2026-12-01 10:00 New York."""
    clock = FixedClock(NOW)
    printed = io.StringIO()
    app = clinic.app(clock=clock, console=printed)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(create_app(app), log_config=None, access_log=False,
                            server_header=False, lifespan="on", timeout_graceful_shutdown=5)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                              name="live-console", daemon=True)
    thread.start()
    try:
        assert server.ready.wait(TIMEOUT_MS / 1000), "uvicorn did not start"
        assert server.started, "uvicorn failed to start (see the log above)"
        yield Live(clinic, clock, app, f"http://127.0.0.1:{port}", printed)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_MS / 1000)
        listener.close()
        app.engine.dispose()
    assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class Problems:
    """What the browser reported wrong on a page: console errors (a CSP violation is one),
    uncaught script errors, and a stylesheet, script or image that did not load.

    A page answered with an error status (a form refused with 400, a 403) is not a
    problem: the tests check those statuses themselves.
    """

    seen: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        # Chromium also logs "Failed to load resource" for a page answered 4xx; the
        # resources that matter are caught by `response` below, with their type.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.seen.append(f"console: {message.text} ({message.location.get('url', '')})")

    def exception(self, error: Exception) -> None:
        self.seen.append(f"page error: {error}")

    def response(self, response: Response) -> None:
        request = response.request
        # The browser asks for /favicon.ico on its own; no page links to it.
        if (response.status >= 400 and request.resource_type != "document"
                and not request.url.endswith("/favicon.ico")):
            self.seen.append(f"{request.resource_type} {request.url}: HTTP {response.status}")

    def failed(self, request: Request) -> None:
        # ERR_ABORTED: the test moved on to another page while this one was loading.
        if request.resource_type != "document" and request.failure != "net::ERR_ABORTED":
            self.seen.append(f"{request.resource_type} {request.url}: {request.failure}")


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def page(browser: Browser, live: Live, problems: Problems) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page on the live console; the test fails
    if the browser logged an error (a CSP violation, a missing file, a script error)."""
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900},
                                  locale="en-US", timezone_id="America/New_York")
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.on("console", problems.console)
    opened.on("pageerror", problems.exception)
    opened.on("response", problems.response)
    opened.on("requestfailed", problems.failed)
    try:
        yield opened
    finally:
        context.close()
    assert problems.seen == [], "the browser reported problems:\n" + "\n".join(problems.seen)


def sign_in(page: Page, live: Live, role: str) -> None:
    """Sign in as `role` through the login form, as a person would."""
    live.account(role)
    page.goto("/login")
    page.get_by_label("Email").fill(EMAILS[role])
    page.get_by_label("Password").fill(PASSWORDS[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


__all__ = ["Live", "Problems", "browser", "live", "page", "problems", "sign_in"]
