"""Console accounts and security: sign-in, lockout, idle expiry, CSRF, roles, headers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aftercare.errors import UserError
from aftercare.staff import check_password
from conftest import Clinic
from console_kit import CSRF, EMAILS, PASSWORDS, Console, console

__all__ = ["console"]



def test_sign_in_sets_a_safe_cookie_and_shows_today(console: Console) -> None:
    answer = console.sign_in("frontdesk")
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # public_url is not https here
    page = console.get("/")
    assert page.status_code == 200 and "Fran Desk" in page.text


def test_security_headers(console: Console) -> None:
    console.sign_in("frontdesk")
    headers = console.get("/").headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["referrer-policy"] == "no-referrer"
    assert console.get("/login").headers["x-frame-options"] == "DENY"


def test_wrong_password_five_times_locks_the_account(console: Console,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    console.account("clinician")
    login = console.get("/login")
    token = CSRF.search(login.text)
    assert token
    for _ in range(5):
        refused = console.client.post("/login", data={"csrf": token.group(1), "email": EMAILS["clinician"],
                                                      "password": "not the password at all"})
        assert refused.status_code == 401
        assert "Wrong email or password." in refused.text
    # Even the right password is refused now, for 15 minutes.
    locked = console.client.post("/login", data={"csrf": token.group(1), "email": EMAILS["clinician"],
                                                 "password": PASSWORDS["clinician"]})
    assert locked.status_code == 401 and "locked" in locked.text
    assert "not the password" not in caplog.text and PASSWORDS["clinician"] not in caplog.text
    console.clock.now += timedelta(minutes=16)
    assert console.sign_in("clinician").status_code == 303


def test_login_form_needs_its_csrf_cookie(console: Console) -> None:
    console.account("admin")
    answer = console.client.post("/login", data={"csrf": "forged", "email": EMAILS["admin"],
                                                 "password": PASSWORDS["admin"]})
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers or "aftercare_session" not in answer.headers["set-cookie"]


def test_idle_session_expires(console: Console) -> None:
    console.sign_in("frontdesk")
    console.clock.now += timedelta(minutes=29)
    assert console.get("/").status_code == 200
    console.clock.now += timedelta(minutes=31)
    assert console.get("/").status_code == 303


def test_logout_ends_the_session(console: Console) -> None:
    console.sign_in("frontdesk")
    cookie = dict(console.client.cookies)
    assert console.post("/logout").status_code == 303
    console.client.cookies.update(cookie)  # the old cookie, replayed
    assert console.get("/").status_code == 303


def test_a_form_without_the_csrf_token_changes_nothing(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    before = clinic.count("patient")
    answer = console.post("/patients", {"name": "Eve Forged", "phone": "+12125550123"}, csrf="x")
    assert answer.status_code == 403
    assert clinic.count("patient") == before


def test_a_patient_added_in_the_console_names_who_added_it(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    added = console.post("/patients", {"name": "Nora Vale", "phone": "+12125550123",
                                       "channel_sms": "1", "channel_email": "1"})
    assert added.status_code == 303, added.text
    assert added.headers["location"] == "/patients/1"
    assert "Patient added." in console.get("/patients").text  # the notice, shown once
    assert "Patient added." not in console.get("/patients").text
    assert clinic.rows("SELECT name FROM patient") == [("Nora Vale",)]


def test_bad_patient_shows_the_error_next_to_the_field(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    answer = console.post("/patients", {"name": "Nora Vale", "phone": "12", "channel_sms": "1"})
    assert answer.status_code == 400
    assert 'id="e-phone"' in answer.text and "not a valid phone number" in answer.text
    assert clinic.count("patient") == 0


def test_patient_data_is_escaped(console: Console) -> None:
    console.sign_in("frontdesk")
    console.post("/patients", {"name": "<script>alert(1)</script>", "phone": "+12125550123",
                               "channel_sms": "1"})
    page = console.get("/patients")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize("password, problem", [
    ("short1", "too short"), ("password123", "too common"), ("aaaaaaaaaaaaaaa", "too common"),
])
def test_password_policy(password: str, problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        check_password(password)


def test_cli_user_commands(clinic: Clinic) -> None:
    added = clinic.run("user", "add", "Amy@Lumiere.example", "--name", "Amy Pond", "--role",
                       "clinician", "--password-stdin", input="copper meadow tangent 3\n")
    assert added.exit_code == 0, added.output
    (row,) = clinic.rows("SELECT email, role, password_hash FROM staffuser")
    assert row[0] == "amy@lumiere.example" and row[1] == "clinician"
    assert row[2].startswith("$argon2id$")
    weak = clinic.run("user", "add", "bo@lumiere.example", "--name", "Bo", "--role", "admin",
                      "--password-stdin", input="password1\n")
    assert weak.exit_code == 2 and "error: password:" in weak.stderr
    assert clinic.json("user", "list")[0]["role"] == "clinician"
    assert clinic.run("user", "disable", "amy@lumiere.example").exit_code == 0
    assert clinic.json("user", "list")[0]["disabled"] is True
    unknown = clinic.run("user", "disable", "nobody@lumiere.example")
    assert unknown.exit_code == 2 and "no staff account" in unknown.stderr


def test_production_hashes_are_argon2id_with_rfc9106_costs() -> None:
    from argon2 import PasswordHasher

    from aftercare.staff import _DUMMY_HASH

    assert _DUMMY_HASH.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().hash("x").startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_the_cli_keeps_an_admin_who_can_sign_in(clinic: Clinic) -> None:
    assert clinic.run("user", "add", "ada@lumiere.example", "--name", "Ada", "--role", "admin",
                      "--password-stdin", input="quiet orbit pebble 19\n").exit_code == 0
    for args in (("disable", "ada@lumiere.example"), ("role", "ada@lumiere.example", "clinician")):
        refused = clinic.run("user", *args)
        assert refused.exit_code == 2 and "last admin who can sign in" in refused.stderr
    assert clinic.rows("SELECT role, disabled_at FROM staffuser") == [("admin", None)]
    assert clinic.run("user", "add", "bo@lumiere.example", "--name", "Bo", "--role", "admin",
                      "--password-stdin", input="copper meadow tangent 3\n").exit_code == 0
    assert clinic.run("user", "disable", "ada@lumiere.example").exit_code == 0


def test_logout_needs_the_sessions_csrf_token(console: Console) -> None:
    console.sign_in("frontdesk")
    assert console.post("/logout", csrf="forged").status_code == 403
    assert console.get("/").status_code == 200  # still signed in
    assert console.post("/logout").status_code == 303
    assert console.get("/").status_code == 303
