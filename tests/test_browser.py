"""The console's main flows in a real headless Chromium, found by label and role as a person
finds them: sign in, add a patient, enroll after a session, the timeline, an urgent reply on
Today, a clinician acknowledging and answering it, booking the next session, signing out.

Every test also fails if the browser logged an error (a CSP violation, a broken link to a
stylesheet or script, a script error): see `browser_kit.page`.
"""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import Page, expect

from browser_kit import Live, Problems, browser, live, page, problems, sign_in
from console_kit import EMAILS, NAMES, PASSWORDS

__all__ = ["browser", "live", "page", "problems"]

BOOKED = re.compile("booked", re.I)
COMPLETED = re.compile("completed", re.I)
CLINICIAN = re.compile(f"{re.escape(NAMES['clinician'])}|{re.escape(EMAILS['clinician'])}")


def test_sign_in_then_sign_out_locks_the_pages_again(page: Page, live: Live) -> None:
    page.goto("/patients")
    # Not signed in: the login form, which brings the user back where they were going.
    expect(page).to_have_url(re.compile(r"/login\?next=/patients$"))
    live.account("frontdesk")
    page.get_by_label("Email").fill(EMAILS["frontdesk"])
    page.get_by_label("Password").fill(PASSWORDS["frontdesk"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live.at("/patients"))
    expect(page.get_by_role("heading", name="Patients", exact=True)).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("Fran Desk")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(live.at("/login"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.get_by_role("heading", name="Sign in to aftercare")).to_be_visible()


def test_a_wrong_password_is_refused_with_a_message(page: Page, live: Live) -> None:
    live.account("clinician")
    page.goto("/login")
    page.get_by_label("Email").fill(EMAILS["clinician"])
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("wrong email or password", re.I))
    expect(page.get_by_label("Email")).to_have_value(EMAILS["clinician"])
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_the_login_form_works_from_the_keyboard_with_a_visible_focus(page: Page,
                                                                      live: Live) -> None:
    live.account("admin")
    page.goto("/login")
    # The email field has the focus on arrival (autofocus); Tab reaches the password field,
    # then the button; Enter on the button signs in.
    expect(page.get_by_label("Email")).to_be_focused()
    assert _outline(page) != "none", "the focused field shows no outline"
    page.keyboard.type(EMAILS["admin"])
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORDS["admin"])
    page.keyboard.press("Tab")
    button = page.get_by_role("button", name="Sign in")
    expect(button).to_be_focused()
    assert _outline(page) != "none", "the focused button shows no outline"
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # The first Tab of a signed-in page reaches the skip link, which becomes visible.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    assert _outline(page) != "none", "the focused link shows no outline"


def go(page: Page, name: str) -> None:
    """Follow a link of the main navigation."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def _outline(page: Page) -> str:
    """The computed outline style of the focused element ("none" when focus is invisible)."""
    style: str = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle === 'none' && s.boxShadow === 'none' ? 'none'"
        " : s.outlineStyle + ' ' + s.outlineWidth; }")
    return style


def test_the_front_desk_adds_a_patient(page: Page, live: Live) -> None:
    sign_in(page, live, "frontdesk")
    go(page, "Patients")
    form = page.get_by_role("region", name="Add a patient")
    form.get_by_label("Full name").fill("Nora Quinn")
    form.get_by_label("Mobile phone").fill("212 555 0199")  # national: the clinic's country
    form.get_by_role("textbox", name="Email").fill("not an email")
    form.get_by_role("button", name="Add patient").click()
    # Refused, the error next to its field, what was typed kept, nothing added.
    email = page.get_by_role("region", name="Add a patient").get_by_role("textbox", name="Email")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_value("not an email")
    assert live.clinic.count("patient") == 0

    email.fill("nora@example.com")
    page.get_by_role("button", name="Add patient").click()
    expect(page.get_by_role("status")).to_have_text("Patient added.")
    expect(page.get_by_role("heading", name="Nora Quinn", level=1)).to_be_visible()
    assert live.clinic.rows("SELECT name, phone, email FROM patient") == [
        ("Nora Quinn", "+12125550199", "nora@example.com")]
    go(page, "Patients")
    page.get_by_label("Search by name, ref, phone or email").fill("quinn")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Nora Quinn")).to_be_visible()


def test_a_refused_required_field_is_marked_and_described_by_its_error(page: Page,
                                                                      live: Live) -> None:
    sign_in(page, live, "frontdesk")
    go(page, "Patients")
    page.get_by_role("button", name="Add patient").click()
    name = page.get_by_role("region", name="Add a patient").get_by_label("Full name")
    # A screen reader announces the field as invalid, with the error as its description.
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_accessible_description(re.compile(r"\S"))
    expect(name).to_have_attribute("required", "")


def test_patient_data_shows_as_text_in_the_browser(page: Page, live: Live) -> None:
    live.patient("<img src=x onerror=alert(1)>", phone=None)
    sign_in(page, live, "frontdesk")
    page.goto("/patients?q=img")
    # The name is text (a link of that name), never an element.
    expect(page.get_by_role("link", name="<img src=x onerror=alert(1)>")).to_be_visible()
    expect(page.locator("main img")).to_have_count(0)
    page.get_by_role("link", name="<img src=x onerror=alert(1)>").click()
    expect(page.get_by_role("heading", name="<img src=x onerror=alert(1)>", level=1)
           ).to_be_visible()
    expect(page.locator("main img")).to_have_count(0)


def test_the_problem_collector_sees_a_csp_violation(page: Page, live: Live,
                                                    problems: Problems) -> None:
    # The check every test relies on can fail: an inline script is refused by the CSP, and
    # the browser's report of it is caught.
    sign_in(page, live, "frontdesk")
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("() => { const s = document.createElement('script');"
                      " s.textContent = 'window.ran = 1'; document.head.appendChild(s); }")
    assert not page.evaluate("() => window.ran === 1"), "an inline script ran despite the CSP"
    assert any("Content Security Policy" in seen for seen in problems.seen), problems.seen
    problems.seen.clear()


def test_the_front_desk_enrolls_a_patient_after_a_session(page: Page, live: Live) -> None:
    live.patient("Jane Doe")
    sign_in(page, live, "frontdesk")
    go(page, "Enroll")
    # Find the patient by name, as at the desk, then describe the session.
    page.get_by_label("Search by name, ref, phone or email").fill("jane")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Jane Doe").click()
    expect(page.get_by_label("Patient", exact=True)).to_have_accessible_description(
        "Chosen: Jane Doe (patient #1)")
    page.get_by_label("Treatment").select_option("cellulite")
    # The session time is filled in with now, in the clinic's time zone.
    expect(page.get_by_label("Session date and time")).to_have_value("2026-12-01T10:00")
    page.get_by_label("Area").fill("thighs")
    page.get_by_label("Next session (optional)").fill("2026-12-15T10:30")
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("region", name="Preview: nothing is saved yet")
    expect(preview).to_contain_text("What is normal in the first 48 hours")
    expect(preview).to_contain_text("1 Dec 2026, 11:00 EST")
    assert live.clinic.count("message") == 0  # a preview saves nothing

    page.get_by_role("button", name="Enroll", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Enrolled")
    expect(page.get_by_role("heading", name="Jane Doe", level=1)).to_be_visible()
    assert live.clinic.count("message") > 0
    # The timeline: the session, then its messages, planned in the clinic's time.
    timeline = page.get_by_role("region", name="Messages")
    expect(timeline.get_by_role("row").filter(has_text="What is normal in the first 48 hours")
           ).to_contain_text("1 Dec 2026, 11:00 EST")
    expect(timeline.get_by_role("row").filter(has_text="Reminder: your next session")
           ).to_contain_text(re.compile("pending|planned", re.I))
    courses = page.get_by_role("region", name="Courses and sessions")
    expect(courses.get_by_role("row").filter(has_text="15 Dec 2026, 10:30 EST")
           ).to_contain_text(BOOKED)


def test_the_front_desk_books_the_next_session(page: Page, live: Live) -> None:
    patient = live.enroll(live.patient("Jane Doe"))
    sign_in(page, live, "frontdesk")
    page.goto(f"/patients/{patient}")
    courses = page.get_by_role("region", name="Courses and sessions")
    expect(courses.get_by_role("row").filter(has_text=COMPLETED)).to_have_count(1)
    courses.get_by_label("Date and time of the next session").fill("2026-12-15T10:30")
    courses.get_by_role("button", name="Book session").click()
    expect(page.get_by_role("status")).to_be_visible()
    booked = page.get_by_role("region", name="Courses and sessions").get_by_role("row").filter(
        has_text="15 Dec 2026, 10:30 EST")
    expect(booked).to_contain_text(BOOKED)
    assert live.clinic.rows("SELECT number, status FROM session ORDER BY number") == [
        (1, "completed"), (2, "booked")]
    # The reminders before the new session are now in the timeline.
    expect(page.get_by_role("region", name="Messages").get_by_role("row").filter(
        has_text="Reminder: your next session")).to_contain_text("13 Dec 2026")


def test_an_urgent_reply_shows_on_today_and_a_clinician_answers_it(page: Page,
                                                                  live: Live) -> None:
    live.enroll(live.patient("Jane Doe"))
    reply = live.reply("+12125550123", "My thigh is hot and swollen and I have a fever",
                       minutes_ago=12)
    assert reply.triage == "urgent"
    sign_in(page, live, "clinician")
    expect(page.get_by_role("heading", name="Today", level=1)).to_be_visible()
    waiting = page.get_by_role("region", name="Replies waiting: urgent and review")
    row = waiting.get_by_role("row").filter(has_text="I have a fever")
    expect(row).to_contain_text("Urgent")
    expect(row).to_contain_text("Jane Doe")
    expect(row).to_contain_text("12 min")
    row.get_by_role("link", name="Open in the inbox").click()

    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    card = page.get_by_role("article").filter(has_text="I have a fever")
    card.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_have_text("Reply acknowledged.")
    assert live.clinic.rows("SELECT status FROM reply") == [("acknowledged",)]

    card = page.get_by_role("article").filter(has_text="I have a fever")
    expect(card.get_by_role("button", name="Acknowledge")).to_have_count(0)
    card.get_by_label("Answer by SMS").fill("Please call us now on 212 555 0100.")
    card.get_by_role("button", name="Send answer").click()
    expect(page.get_by_role("status")).to_have_text("Answer sent to Jane Doe.")
    assert "Please call us now on 212 555 0100." in live.printed.getvalue()
    # The patient's conversation keeps it, in the clinician's name; the history says who.
    page.goto(f"/patients/{reply.patient_id}")
    conversation = page.get_by_role("region", name="Conversation")
    expect(conversation).to_contain_text("Please call us now on 212 555 0100.")
    expect(conversation).to_contain_text(CLINICIAN)
    expect(page.get_by_role("region", name="History")).to_contain_text(CLINICIAN)


def test_the_front_desk_sees_an_urgent_reply_but_cannot_act_on_it(page: Page,
                                                                  live: Live) -> None:
    live.enroll(live.patient("Jane Doe"))
    live.reply("+12125550123", "My thigh is hot and swollen and I have a fever")
    sign_in(page, live, "frontdesk")
    go(page, "Inbox")
    card = page.get_by_role("article").filter(has_text="I have a fever")
    expect(card).to_contain_text("Only a clinician can act on urgent and review replies.")
    expect(card.get_by_role("button")).to_have_count(0)


def test_the_patient_page_answers_by_sms(page: Page, live: Live) -> None:
    patient = live.patient("Jane Doe")
    live.enroll(patient)
    sign_in(page, live, "frontdesk")
    page.goto(f"/patients/{patient}")
    for section in ("Contact and consent", "Courses and sessions", "Messages", "Conversation",
                    "History"):
        expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    page.get_by_label("Reply by SMS").fill("See you on the 15th!")
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_be_visible()
    expect(page.get_by_role("region", name="Conversation")).to_contain_text("See you on the 15th!")
    assert "See you on the 15th!" in live.printed.getvalue()


def test_every_page_of_the_menu_opens_without_a_browser_error(page: Page, live: Live) -> None:
    # The fixture fails the test on any console error: a CSP violation (inline script or
    # style), a missing stylesheet or script, a script error, on any page an admin opens.
    live.enroll(live.patient("Jane Doe"))
    live.reply("+12125550123", "Thanks, all good")
    live.clock.now += timedelta(hours=1)
    sign_in(page, live, "admin")
    names = page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()
    assert {"Today", "Inbox", "Patients", "Enroll", "Messages", "Protocols", "Import",
            "Users"} <= set(names), names
    for name in names:
        go(page, name)
        expect(page.get_by_role("heading", level=1)).not_to_be_empty()
        assert page.url.startswith(live.url)
    page.get_by_role("link", name=NAMES["admin"]).click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    page.goto("/patients/1")
    expect(page.get_by_role("heading", name="Jane Doe", level=1)).to_be_visible()
