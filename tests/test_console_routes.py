"""Guarantees every console route keeps, checked route by route from the routing table:
a login is needed, and no form changes anything without the session's CSRF token."""

from __future__ import annotations

import re
import sqlite3

import pytest
from starlette.routing import Route

from aftercare.web import console as console_package
from conftest import Clinic
from console_kit import Console, console

__all__ = ["console"]

OPEN = {"/login", "/logout"}


def _routes(method: str, ident: str = "1") -> list[str]:
    paths = []
    for route in console_package.routes():
        if isinstance(route, Route) and method in (route.methods or set()) \
                and route.path not in OPEN:
            paths.append(re.sub(r"\{[^}]+\}", ident, route.path))
    return sorted(set(paths))


HUGE = "99999999999999999999999"


def _dump(clinic: Clinic) -> list[str]:
    """Every row of every table but the sessions (whose last-seen time moves on each request)."""
    with sqlite3.connect(clinic.db_path) as conn:
        return [line for line in conn.iterdump() if "staffsession" not in line.lower()]


def _seed(clinic: Clinic) -> None:
    assert clinic.run("patient", "add", "--name", "Ana Lee", "--phone", "+12125550123",
                      "--email", "ana@example.com").exit_code == 0
    assert clinic.run("--now", "2026-12-01T09:00-05:00", "enroll", "1", "--treatment", "cellulite",
                      "--session-at", "2026-11-30T10:00",
                      "--next-session-at", "2026-12-07T10:00").exit_code == 0


def test_the_routing_table_has_every_page() -> None:
    pages = _routes("GET")
    for path in ("/", "/inbox", "/patients", "/patients/1", "/enroll", "/messages", "/protocols",
                 "/import", "/users", "/setup", "/account"):
        assert path in pages
    assert len(_routes("POST")) >= 20


@pytest.mark.parametrize("path", _routes("GET"))
def test_every_page_needs_a_login(console: Console, path: str) -> None:
    answer = console.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("path", _routes("POST"))
def test_no_form_does_anything_without_a_login(console: Console, clinic: Clinic, path: str) -> None:
    _seed(clinic)
    before = _dump(clinic)
    answer = console.client.post(path, data={"csrf": "x", "name": "Eve", "text": "hi"})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert _dump(clinic) == before


@pytest.mark.parametrize("path", _routes("POST"))
def test_no_form_does_anything_without_its_csrf_token(console: Console, clinic: Clinic,
                                                      path: str) -> None:
    _seed(clinic)
    console.sign_in("admin")
    before = _dump(clinic)
    for token in ("", "forged"):
        answer = console.post(path, {"name": "Eve", "text": "hi", "confirm": "FORGET"}, csrf=token)
        assert answer.status_code == 403, (path, answer.status_code)
    assert _dump(clinic) == before


def test_the_session_cookie_is_secure_behind_https(clinic: Clinic) -> None:
    from starlette.testclient import TestClient

    from aftercare.web import create_app
    from conftest import FixedClock, utc

    app = clinic.app(clock=FixedClock(utc("2026-12-01T15:00:00+00:00")))
    app.settings.web.public_url = "https://aftercare.lumiere.example"
    with TestClient(create_app(app), base_url="https://testserver", follow_redirects=False) as client:
        kit = Console(clinic, FixedClock(utc("2026-12-01T15:00:00+00:00")), app, client)
        answer = kit.sign_in("admin")
    assert "Secure" in answer.headers["set-cookie"]
    assert "HttpOnly" in answer.headers["set-cookie"]


@pytest.mark.parametrize("path", [p for p in _routes("GET", HUGE) if HUGE in p] + [
    f"/patients?page={HUGE}", f"/messages?page={HUGE}", f"/inbox?closed=1&page={HUGE}",
    f"/users?page={HUGE}", f"/patients/1?hpage={HUGE}", f"/patients/1?cpage={HUGE}",
    f"/enroll?patient={HUGE}"])
def test_numbers_no_database_holds_are_not_found_not_a_crash(console: Console, clinic: Clinic,
                                                             path: str) -> None:
    _seed(clinic)
    console.sign_in("admin")
    assert console.get(path).status_code in (200, 404)


@pytest.mark.parametrize("path", [p for p in _routes("POST", HUGE) if HUGE in p])
def test_forms_on_records_no_database_holds_change_nothing(console: Console, clinic: Clinic,
                                                           path: str) -> None:
    _seed(clinic)
    console.sign_in("admin")
    before = _dump(clinic)
    answer = console.post(path, {"text": "hi", "note": "x", "level": "routine", "role": "admin",
                                 "at": "2026-12-20T10:00", "confirm": "FORGET"})
    assert answer.status_code in (400, 404), (path, answer.status_code)
    assert _dump(clinic) == before


def test_enroll_and_book_with_huge_ids_change_nothing(console: Console, clinic: Clinic) -> None:
    _seed(clinic)
    console.sign_in("admin")
    before = _dump(clinic)
    for patient in (HUGE, f"#{HUGE}"):
        answer = console.post("/enroll", {"patient": patient, "treatment": "cellulite",
                                          "session_at": "2026-12-01T09:00", "action": "enroll"})
        assert answer.status_code == 400
    answer = console.post("/patients/1/book", {"course": HUGE, "at": "2026-12-20T10:00"})
    assert answer.status_code in (400, 404)
    assert _dump(clinic) == before
