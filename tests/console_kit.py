"""The console under test: the real Starlette app through its test client, a fixed clock,
one staff account per role, and forms posted the way a browser posts them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from aftercare.app import App
from aftercare.staff import add_user
from aftercare.web import create_app
from conftest import Clinic, FixedClock, utc

# Long enough and uncommon enough for the password policy.
PASSWORDS = {"frontdesk": "violet harbour ledger 7", "clinician": "copper meadow tangent 3",
             "admin": "quiet orbit pebble 19"}
EMAILS = {role: f"{role}@lumiere.example" for role in PASSWORDS}
NAMES = {"frontdesk": "Fran Desk", "clinician": "Dr Clara Ink", "admin": "Ada Min"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_account(app: App, role: str, made: set[str]) -> None:
    """The staff account of `role` (EMAILS, NAMES, PASSWORDS), unless it is in `made` already."""
    if role in made:
        return
    with app.db() as db:
        add_user(db, EMAILS[role], NAMES[role], role, PASSWORDS[role], app.clock())
    made.add(role)


@dataclass
class Console:
    """A browser-like client of one console; `sign_in(role)` makes it that staff member."""

    clinic: Clinic
    clock: FixedClock
    app: App
    client: TestClient
    csrf: str = ""
    accounts: set[str] = field(default_factory=set)

    def account(self, role: str) -> None:
        add_account(self.app, role, self.accounts)

    def sign_in(self, role: str) -> httpx.Response:
        self.account(role)
        self.client.cookies.clear()
        login = self.client.get("/login")
        token = CSRF.search(login.text)
        assert token, login.text
        answer = self.client.post("/login", data={"csrf": token.group(1), "email": EMAILS[role],
                                                  "password": PASSWORDS[role], "next": "/"})
        assert answer.status_code == 303, answer.text
        home = self.client.get("/")
        found = CSRF.search(home.text)
        assert found, home.text
        self.csrf = found.group(1)
        return answer

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params or None)

    def post(self, path: str, data: Mapping[str, Any] | None = None, *, csrf: str | None = None,
             files: Mapping[str, Any] | None = None) -> httpx.Response:
        form = {"csrf": self.csrf if csrf is None else csrf, **(data or {})}
        return self.client.post(path, data=form, files=files)

    def follow(self, answer: httpx.Response) -> httpx.Response:
        """The page a 303 leads to (with its one-time notice)."""
        assert answer.status_code == 303, (answer.status_code, answer.text)
        return self.client.get(answer.headers["location"])


@pytest.fixture
def console(clinic: Clinic) -> Iterator[Console]:
    clock = FixedClock(utc("2026-12-01T15:00:00+00:00"))  # 10:00 in New York, a Tuesday
    app = clinic.app(clock=clock)
    with TestClient(create_app(app), base_url="http://testserver", follow_redirects=False) as client:
        yield Console(clinic, clock, app, client)
