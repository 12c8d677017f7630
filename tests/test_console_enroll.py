"""Console: enroll after a session, with a preview that writes nothing."""

from __future__ import annotations

import pytest

from conftest import Clinic
from console_kit import EMAILS, Console, console

__all__ = ["console"]

TABLES = ("course", "session", "message", "event")
# The fixed clock is 2026-12-01 10:00 in New York.
VISIT = {"patient": "#1", "treatment": "cellulite", "session-at": "2026-12-01T09:00",
         "area": "thighs", "session-number": "", "next-session-at": "2026-12-15T09:00"}


@pytest.fixture
def nora(clinic: Clinic) -> Clinic:
    result = clinic.run("patient", "add", "--name", "Nora Vale", "--phone", "+12125550123",
                        "--email", "nora@example.com", "--ref", "LUM-7")
    assert result.exit_code == 0, result.output
    return clinic


def _state(clinic: Clinic) -> tuple[int, ...]:
    return tuple(clinic.count(table) for table in TABLES)


def test_the_form_defaults_to_now_in_the_clinic_zone_and_preselects_the_patient(
        console: Console, nora: Clinic) -> None:
    console.sign_in("frontdesk")
    page = console.get("/enroll", patient="1")
    assert page.status_code == 200
    assert 'value="2026-12-01T10:00"' in page.text  # 15:00 UTC is 10:00 in New York
    assert 'value="#1"' in page.text and "Nora Vale" in page.text
    for label in ("Patient", "Treatment", "Session date and time", "Area",
                  "Next session (optional)"):
        assert f">{label}</label>" in page.text, label
    assert '<option value="cellulite"' in page.text
    assert ">Preview</button>" in page.text and ">Enroll</button>" in page.text


def test_the_search_finds_a_patient_to_enroll(console: Console, nora: Clinic) -> None:
    console.sign_in("frontdesk")
    page = console.get("/enroll", q="nora")
    assert 'href="/enroll?patient=1"' in page.text
    assert "No patient matches." in console.get("/enroll", q="zzz").text


def test_preview_shows_the_plan_and_writes_nothing(console: Console, nora: Clinic) -> None:
    console.sign_in("frontdesk")
    before = _state(nora)
    page = console.post("/enroll", {**VISIT, "action": "preview"})
    assert page.status_code == 200, page.text
    assert "Preview: nothing is saved yet" in page.text
    assert "cellulite mesotherapy: session 1 of 6." in page.text
    assert "EST" in page.text  # times in the clinic's zone
    assert "first_48h" in page.text
    assert _state(nora) == before == (0, 0, 0, 0)
    # The form keeps what was typed, ready for Enroll.
    assert 'value="2026-12-15T09:00"' in page.text


def test_preview_plans_exactly_what_enroll_saves(console: Console, nora: Clinic) -> None:
    console.sign_in("frontdesk")
    preview = console.post("/enroll", {**VISIT, "action": "preview"})
    shown = preview.text.count('<span class="badge pending">')
    saved = console.post("/enroll", {**VISIT, "action": "enroll"})
    assert saved.status_code == 303
    steps = nora.rows("SELECT count(DISTINCT step || send_after) FROM message")[0][0]
    assert shown == steps > 0


def test_enroll_saves_redirects_to_the_patient_and_names_the_staff_member(
        console: Console, nora: Clinic) -> None:
    console.sign_in("frontdesk")
    saved = console.post("/enroll", {**VISIT, "action": "enroll"})
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/patients/1"
    planned = nora.count("message")
    assert planned > 0
    assert f"Enrolled: {planned} message(s) planned." in console.get("/enroll").text
    assert nora.rows("SELECT status FROM session ORDER BY at") == [("completed",), ("booked",)]
    actors = {actor for (actor,) in nora.rows("SELECT actor FROM event")}
    assert actors == {EMAILS["frontdesk"]}
    # Enrolling the same session again plans nothing new.
    again = console.post("/enroll", {**VISIT, "action": "enroll"})
    assert again.status_code == 303 and nora.count("message") == planned


@pytest.mark.parametrize(("change", "field", "text"), [
    ({"treatment": "botox-deluxe"}, "treatment", "unknown treatment"),
    ({"treatment": ""}, "treatment", "Choose the treatment."),
    ({"session-at": "2026-12-02T09:00"}, "session-at", "is in the future"),
    ({"session-at": "yesterday"}, "session-at", "is not an ISO 8601 time"),
    ({"session-at": ""}, "session-at", "Enter the date and time of the session."),
    ({"next-session-at": "2026-11-30T09:00"}, "next-session-at",
     "must be after &#34;Session date and time&#34;"),
    ({"session-number": "two"}, "session-number", "whole number"),
    ({"session-number": "0"}, "session-number", "between 1 and 500"),
    ({"patient": "#99"}, "patient", "no patient with id or ref"),
    ({"patient": ""}, "patient", "Choose the patient"),
])
@pytest.mark.parametrize("action", ["preview", "enroll"])
def test_bad_input_shows_next_to_its_field_and_saves_nothing(
        console: Console, nora: Clinic, change: dict[str, str], field: str, text: str,
        action: str) -> None:
    console.sign_in("frontdesk")
    answer = console.post("/enroll", {**VISIT, **change, "action": action})
    assert answer.status_code == 400, answer.text
    assert f'id="e-{field}"' in answer.text
    error = answer.text.split(f'id="e-{field}"')[1].split("</small>")[0]
    assert text in error
    assert _state(nora) == (0, 0, 0, 0)


def test_a_patient_ref_works_in_the_patient_field(console: Console, nora: Clinic) -> None:
    console.sign_in("clinician")
    saved = console.post("/enroll", {**VISIT, "patient": "LUM-7", "action": "enroll"})
    assert saved.status_code == 303 and nora.count("course") == 1


def test_enroll_needs_the_csrf_token(console: Console, nora: Clinic) -> None:
    console.sign_in("admin")
    answer = console.post("/enroll", {**VISIT, "action": "enroll"}, csrf="forged")
    assert answer.status_code == 403
    assert _state(nora) == (0, 0, 0, 0)


def test_enroll_needs_a_login(console: Console, nora: Clinic) -> None:
    assert console.get("/enroll").status_code == 303
    answer = console.client.post("/enroll", data={**VISIT, "action": "enroll"})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert _state(nora) == (0, 0, 0, 0)


def test_patient_data_is_escaped(console: Console, clinic: Clinic) -> None:
    clinic.run("patient", "add", "--name", "<script>alert(1)</script>", "--phone",
               "+12125550123")
    console.sign_in("frontdesk")
    for page in (console.get("/enroll", patient="1"), console.get("/enroll", q="script"),
                 console.post("/enroll", {**VISIT, "action": "preview"})):
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
