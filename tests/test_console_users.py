"""Console: users (admin), the setup check (admin) and one's own account (everyone)."""

from __future__ import annotations

import html

import pytest

from aftercare.app import App
from aftercare.checks import setup_problems
from aftercare.staff import authenticate
from conftest import Clinic
from console_kit import EMAILS, NAMES, PASSWORDS, Console, console

__all__ = ["console"]

NEW = {"email": "Nina@Lumiere.example", "name": "Nina New", "role": "clinician",
       "password": "lantern velvet quarry 42"}


def _users(clinic: Clinic) -> list[tuple[object, ...]]:
    return clinic.rows("SELECT email, name, role, password_hash, disabled_at, locale "
                       "FROM staffuser ORDER BY id")


def _id(clinic: Clinic, role: str) -> int:
    return int(clinic.rows(f"SELECT id FROM staffuser WHERE email = '{EMAILS[role]}'")[0][0])


def _error(page: str, field: str) -> str:
    return page.split(f'id="e-{field}"')[1].split("</")[0]


# --- users --------------------------------------------------------------------------------


def test_admin_lists_the_accounts(console: Console) -> None:
    console.account("frontdesk")
    console.sign_in("admin")
    page = console.get("/users")
    assert page.status_code == 200
    for role in ("frontdesk", "admin"):
        assert EMAILS[role] in page.text and NAMES[role] in page.text
    assert "never" in page.text  # the front desk has not signed in yet
    assert "1 Dec 2026, 10:00 EST" in page.text  # the admin's last sign-in, clinic time
    for label in ("Email", "Name", "Role", "Password"):
        assert f">{label}</label>" in page.text


def test_admin_adds_a_user_who_can_sign_in(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    added = console.post("/users", NEW)
    assert added.status_code == 303, added.text
    assert "Added nina@lumiere.example (clinician)." in console.follow(added).text
    assert _users(clinic)[-1][:3] == ("nina@lumiere.example", "Nina New", "clinician")
    with console.app.db() as db:
        assert authenticate(db, NEW["email"], NEW["password"], console.clock()).role == "clinician"


@pytest.mark.parametrize(("change", "field", "text"), [
    ({"password": "short"}, "password", "too short"),
    ({"password": "password1234"}, "password", "too common"),
    ({"email": "not an email"}, "email", ""),
    ({"email": EMAILS["admin"]}, "email", "already has an account"),
    ({"name": " "}, "name", "must not be empty"),
    ({"role": "owner"}, "role", "is not a role"),
])
def test_a_bad_new_user_shows_the_error_next_to_its_field(
        console: Console, clinic: Clinic, change: dict[str, str], field: str, text: str) -> None:
    console.sign_in("admin")
    before = _users(clinic)
    answer = console.post("/users", {**NEW, **change})
    assert answer.status_code == 400
    assert text in _error(answer.text, field)
    assert _users(clinic) == before
    assert NEW["password"] not in answer.text  # a password is never sent back


def test_admin_changes_a_role(console: Console, clinic: Clinic) -> None:
    console.account("frontdesk")
    console.sign_in("admin")
    user_id = _id(clinic, "frontdesk")
    page = console.get(f"/users/{user_id}")
    assert page.status_code == 200 and EMAILS["frontdesk"] in page.text
    changed = console.post(f"/users/{user_id}/role", {"role": "clinician"})
    assert changed.status_code == 303
    assert "is now clinician." in console.follow(changed).text
    assert clinic.rows(f"SELECT role FROM staffuser WHERE id = {user_id}") == [("clinician",)]
    bad = console.post(f"/users/{user_id}/role", {"role": "owner"})
    assert bad.status_code == 400 and "is not a role" in _error(bad.text, "role")


def test_admin_disables_and_enables_an_account(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    frontdesk_cookies = dict(console.client.cookies)
    console.sign_in("admin")
    user_id = _id(clinic, "frontdesk")
    assert console.post(f"/users/{user_id}/disable").status_code == 303
    assert clinic.rows(f"SELECT disabled_at IS NOT NULL FROM staffuser WHERE id = {user_id}") \
        == [(1,)]
    assert "disabled" in console.get("/users").text
    # The front desk's open session ended at once.
    admin_cookies = dict(console.client.cookies)
    console.client.cookies.clear()
    console.client.cookies.update(frontdesk_cookies)
    assert console.get("/").status_code == 303
    console.client.cookies.clear()
    console.client.cookies.update(admin_cookies)
    assert console.post(f"/users/{user_id}/enable").status_code == 303
    assert clinic.rows(f"SELECT disabled_at FROM staffuser WHERE id = {user_id}") == [(None,)]
    assert console.sign_in("frontdesk").status_code == 303


def test_admin_sets_a_new_password(console: Console, clinic: Clinic) -> None:
    console.account("clinician")
    console.sign_in("admin")
    user_id = _id(clinic, "clinician")
    before = _users(clinic)
    weak = console.post(f"/users/{user_id}/password", {"password": "short"})
    assert weak.status_code == 400 and "too short" in _error(weak.text, "password")
    assert _users(clinic) == before
    done = console.post(f"/users/{user_id}/password", {"password": "harbour linen falcon 88"})
    assert done.status_code == 303
    with console.app.db() as db:
        authenticate(db, EMAILS["clinician"], "harbour linen falcon 88", console.clock())


def test_an_admin_cannot_disable_themselves(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    console.post("/users", {**NEW, "role": "admin"})  # another admin exists: still refused
    user_id = _id(clinic, "admin")
    answer = console.post(f"/users/{user_id}/disable")
    assert answer.status_code == 400
    assert "cannot disable your own account" in _error(answer.text, "status")
    assert clinic.rows(f"SELECT disabled_at FROM staffuser WHERE id = {user_id}") == [(None,)]


def test_the_last_admin_keeps_the_role(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    user_id = _id(clinic, "admin")
    answer = console.post(f"/users/{user_id}/role", {"role": "clinician"})
    assert answer.status_code == 400 and "last admin" in _error(answer.text, "role")
    assert clinic.rows(f"SELECT role FROM staffuser WHERE id = {user_id}") == [("admin",)]
    # With a second admin, the first may step down (and then no longer sees the users).
    console.post("/users", {**NEW, "role": "admin"})
    stepped = console.post(f"/users/{user_id}/role", {"role": "clinician"})
    assert stepped.status_code == 303 and stepped.headers["location"] == "/"
    assert console.get("/users").status_code == 403
    # The remaining admin cannot be disabled by anyone now (there is no other admin).
    console.sign_in("admin")  # a clinician now: refused
    other = int(clinic.rows("SELECT id FROM staffuser WHERE email = 'nina@lumiere.example'")[0][0])
    assert console.post(f"/users/{other}/disable").status_code == 403


def test_an_admin_changes_their_own_password_on_the_account_page(console: Console,
                                                                 clinic: Clinic) -> None:
    console.sign_in("admin")
    before = _users(clinic)
    answer = console.post(f"/users/{_id(clinic, 'admin')}/password",
                          {"password": "harbour linen falcon 88"})
    assert answer.status_code == 400 and "Account page" in _error(answer.text, "password")
    assert _users(clinic) == before


@pytest.mark.parametrize("role", ["frontdesk", "clinician"])
def test_only_admins_manage_users(console: Console, clinic: Clinic, role: str) -> None:
    console.account("admin")
    console.sign_in(role)
    admin_id = _id(clinic, "admin")
    before = _users(clinic)
    assert console.get("/users").status_code == 403
    assert console.get(f"/users/{admin_id}").status_code == 403
    assert console.post("/users", NEW).status_code == 403
    for action, data in (("role", {"role": "frontdesk"}), ("disable", {}), ("enable", {}),
                         ("password", {"password": "harbour linen falcon 88"})):
        assert console.post(f"/users/{admin_id}/{action}", data).status_code == 403, action
    assert _users(clinic) == before


def test_user_forms_need_the_csrf_token(console: Console, clinic: Clinic) -> None:
    console.account("frontdesk")
    console.sign_in("admin")
    before = _users(clinic)
    assert console.post("/users", NEW, csrf="forged").status_code == 403
    assert console.post(f"/users/{_id(clinic, 'frontdesk')}/disable", csrf="x").status_code == 403
    assert _users(clinic) == before


def test_an_unknown_account_is_not_found(console: Console) -> None:
    console.sign_in("admin")
    assert console.get("/users/999").status_code == 404
    assert console.get("/users/abc").status_code == 404
    assert console.post("/users/999/disable").status_code == 404


def test_user_names_are_escaped(console: Console) -> None:
    console.sign_in("admin")
    console.post("/users", {**NEW, "name": "<script>alert(1)</script>"})
    page = console.get("/users")
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text


# --- setup check --------------------------------------------------------------------------


def test_the_setup_check_shows_problems_and_settings_without_secrets(
        console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFTERCARE_SMTP_PASSWORD", "hunter2-very-secret")
    console.sign_in("admin")
    page = console.get("/setup")
    assert page.status_code == 200
    assert "Lumiere Aesthetics" in page.text and "America/New_York" in page.text
    assert "20:00-09:00" in page.text  # quiet hours
    assert "hunter2-very-secret" not in page.text
    assert "AFTERCARE_SMTP_PASSWORD" in page.text
    expected = setup_problems(console.app, live=False)
    for problem in expected:
        assert problem in html.unescape(page.text)
    assert ("No problem found." in page.text) == (not expected)


def test_the_setup_check_lists_what_aftercare_check_reports(
        console: Console, clinic: Clinic) -> None:
    clinic.config.write_text(clinic.config.read_text() + '\n[sms]\ninbound = "webhook"\n')
    console.app.settings = App.from_config(clinic.config).settings
    console.sign_in("admin")
    page = console.get("/setup")
    assert "sms.inbound is webhook but web.public_url is not set" in page.text
    assert "Run the full check" in page.text


def test_the_live_check_is_a_button(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def check(name: str) -> list[str]:
        asked.append(name)
        return []

    for name, channel in console.app.channels.items():
        monkeypatch.setattr(channel, "check", lambda name=name: check(name))
    console.sign_in("admin")
    console.get("/setup")
    assert asked == []  # the page itself never contacts a provider
    page = console.post("/setup")
    assert page.status_code == 200
    assert "Full check" in page.text
    assert sorted(asked) == ["email", "sms"]  # nothing offline stood in the way


@pytest.mark.parametrize("role", ["frontdesk", "clinician"])
def test_only_admins_see_the_setup_check(console: Console, role: str) -> None:
    console.sign_in(role)
    assert console.get("/setup").status_code == 403
    assert console.post("/setup").status_code == 403


# --- own account --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["frontdesk", "clinician", "admin"])
def test_everyone_has_an_account_page(console: Console, role: str) -> None:
    console.sign_in(role)
    page = console.get("/account")
    assert page.status_code == 200 and EMAILS[role] in page.text
    for label in ("Language", "Current password", "New password"):
        assert f">{label}</label>" in page.text


def test_choosing_french_switches_the_console(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    answer = console.post("/account/language", {"locale": "fr"})
    assert answer.status_code == 303
    assert clinic.rows(f"SELECT locale FROM staffuser WHERE id = {_id(clinic, 'frontdesk')}") \
        == [("fr",)]
    page = console.follow(answer)
    assert '<html lang="fr">' in page.text
    assert '<option value="fr" lang="fr" selected>' in page.text
    back = console.post("/account/language", {"locale": ""})
    assert back.status_code == 303
    assert clinic.rows(f"SELECT locale FROM staffuser WHERE id = {_id(clinic, 'frontdesk')}") \
        == [(None,)]
    assert '<html lang="en">' in console.follow(back).text


def test_an_unknown_language_is_refused(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    answer = console.post("/account/language", {"locale": "de"})
    assert answer.status_code == 400 and "is not available" in _error(answer.text, "locale")
    assert clinic.rows(f"SELECT locale FROM staffuser WHERE id = {_id(clinic, 'frontdesk')}") \
        == [(None,)]


def test_changing_ones_password_needs_the_current_one(console: Console, clinic: Clinic) -> None:
    console.sign_in("clinician")
    before = _users(clinic)
    wrong = console.post("/account/password", {"current_password": "not it at all",
                                               "password": "harbour linen falcon 88"})
    assert wrong.status_code == 400
    assert "is not your current password" in _error(wrong.text, "current_password")
    weak = console.post("/account/password", {"current_password": PASSWORDS["clinician"],
                                              "password": "password1234"})
    assert weak.status_code == 400 and "too common" in _error(weak.text, "password")
    assert _users(clinic) == before
    assert PASSWORDS["clinician"] not in wrong.text + weak.text


def test_changing_ones_password_keeps_this_browser_and_signs_out_the_others(
        console: Console, clinic: Clinic) -> None:
    console.sign_in("clinician")
    other = dict(console.client.cookies)
    console.sign_in("clinician")  # a second browser
    done = console.post("/account/password", {"current_password": PASSWORDS["clinician"],
                                              "password": "harbour linen falcon 88"})
    assert done.status_code == 303
    assert "Password changed" in console.follow(done).text  # still signed in here
    with console.app.db() as db:
        authenticate(db, EMAILS["clinician"], "harbour linen falcon 88", console.clock())
    console.client.cookies.clear()
    console.client.cookies.update(other)
    assert console.get("/").status_code == 303  # the other browser was signed out


def test_account_forms_need_the_csrf_token(console: Console, clinic: Clinic) -> None:
    console.sign_in("frontdesk")
    before = _users(clinic)
    assert console.post("/account/language", {"locale": "fr"}, csrf="x").status_code == 403
    assert console.post("/account/password", {"current_password": PASSWORDS["frontdesk"],
                                               "password": "harbour linen falcon 88"},
                        csrf="x").status_code == 403
    assert _users(clinic) == before


def test_the_account_page_needs_a_login(console: Console, clinic: Clinic) -> None:
    console.account("frontdesk")
    before = _users(clinic)
    assert console.get("/account").status_code == 303
    answer = console.client.post("/account/language", data={"locale": "fr"})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert _users(clinic) == before


def test_guessing_the_current_password_locks_the_account_like_the_login(console: Console) -> None:
    console.sign_in("clinician")
    for attempt in range(4):
        wrong = console.post("/account/password", {"current_password": f"guess number {attempt}",
                                                   "password": "a brand new passphrase 9"})
        assert wrong.status_code == 400
    fifth = console.post("/account/password", {"current_password": "guess number 5",
                                                "password": "a brand new passphrase 9"})
    assert fifth.status_code == 303 and fifth.headers["location"] == "/login"
    assert console.get("/").status_code == 303  # signed out everywhere
    (locked_until,) = console.clinic.rows(
        "SELECT locked_until FROM staffuser WHERE role = 'clinician'")[0]
    assert locked_until is not None
