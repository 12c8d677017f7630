"""`aftercare import`: a day's completed sessions from a CSV file, all or nothing, once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import Result

from aftercare.cli.views import import_report_json
from aftercare.csv_import import ImportReport, RowProblem, import_csv
from aftercare.db import migrate
from conftest import CONFIG, Clinic, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

# Monday 2 March 2026, 18:00 in New York: the end of the clinic's day.
NOW = "2026-03-02T18:00-05:00"
HEADER = ("ref,name,phone,email,timezone,locale,channels,treatment,area,session_at,"
          "session_number,next_session_at")
JANE = ("LUM-1,Jane Doe,(212) 555-0123,jane@example.com,,,,cellulite,thighs,2026-03-02T10:30,,"
        "2026-03-16T10:30")
MARIA = ("LUM-2,Maria Lopez,+1 213 555 0147,,America/Los_Angeles,,sms,fat-dissolving,chin,"
         "2026-03-02T14:00-05:00,2,")
PAUL = ",Paul Martin,,Paul@Example.com,,fr,,hair-loss,,2026-03-02T16:00,,"
DAY = [JANE, MARIA, PAUL]
TABLES = ("patient", "course", "session", "message", "event")


def _csv(clinic: Clinic, rows: list[str], *, header: str = HEADER, name: str = "day.csv",
         prefix: bytes = b"", encoding: str = "utf-8") -> Path:
    path = clinic.folder / name
    path.write_bytes(prefix + "\r\n".join([header, *rows, ""]).encode(encoding))
    return path


def _import(clinic: Clinic, path: Path, *extra: str, now: str = NOW) -> Result:
    return clinic.run("--now", now, "import", str(path), *extra)


def _state(clinic: Clinic) -> tuple[object, ...]:
    """Row counts of every table and a hash of every message row."""
    messages = clinic.rows("SELECT * FROM message ORDER BY id")
    digest = hashlib.sha256(repr(messages).encode()).hexdigest()
    return (*(clinic.count(t) for t in TABLES), digest)


def _patients(clinic: Clinic) -> list[tuple[object, ...]]:
    return clinic.rows("SELECT ref, name, phone, email, timezone, locale, channels "
                       "FROM patient ORDER BY id")


def _sessions(clinic: Clinic, name: str) -> list[tuple[object, ...]]:
    return clinic.rows(
        "SELECT s.number, s.status, s.at FROM session s JOIN course c ON s.course_id = c.id "
        f"JOIN patient p ON c.patient_id = p.id WHERE p.name = '{name}' ORDER BY s.at")


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return str(result.stdout)


def _stderr_lines(result: Result) -> list[str]:
    # The progress bar's label (stderr is not a terminal here) is not a message.
    return [line for line in result.stderr.splitlines() if line.strip() != "Importing"]


def _other_clinic(tmp_path: Path) -> Clinic:
    folder = tmp_path / "manual"
    folder.mkdir()
    config = folder / "aftercare.toml"
    config.write_text(CONFIG.format(db=folder / "clinic.db"), encoding="utf-8")
    made = Clinic(folder, config, folder / "clinic.db")
    migrate(made.app().engine)
    return made


def _plan(clinic: Clinic) -> list[tuple[object, ...]]:
    return clinic.rows(
        "SELECT p.name, m.step, m.occurrence, m.channel, m.status, m.planned_at, m.send_after, "
        "m.expires_at FROM message m JOIN patient p ON m.patient_id = p.id "
        "ORDER BY p.name, m.send_after, m.step, m.channel")


def test_a_days_file_enrolls_like_the_commands_would(clinic: Clinic, tmp_path: Path) -> None:
    out = _ok(_import(clinic, _csv(clinic, DAY)))
    planned = clinic.count("message")
    assert planned > 20
    assert out.strip() == (f"3 row(s): 3 imported, 0 unchanged; 3 patient(s) added, 0 updated; "
                           f"{planned} message(s) planned.")
    # Normalised like `patient add`; empty cells take the clinic's defaults.
    assert _patients(clinic) == [
        ("LUM-1", "Jane Doe", "+12125550123", "jane@example.com", "America/New_York", "en",
         "sms,email"),
        ("LUM-2", "Maria Lopez", "+12135550147", None, "America/Los_Angeles", "en", "sms"),
        (None, "Paul Martin", None, "Paul@example.com", "America/New_York", "fr", "email"),
    ]
    # Times without an offset are the clinic's (New York, UTC-5 in early March).
    assert _sessions(clinic, "Jane Doe") == [(1, "completed", "2026-03-02 15:30:00.000000"),
                                             (2, "booked", "2026-03-16 14:30:00.000000")]
    assert _sessions(clinic, "Maria Lopez") == [(2, "completed", "2026-03-02 19:00:00.000000")]
    assert clinic.rows("SELECT treatment, area FROM course ORDER BY id") == [
        ("cellulite", "thighs"), ("fat-dissolving", "chin"), ("hair-loss", "")]

    # The same sessions entered by hand plan exactly the same messages.
    manual = _other_clinic(tmp_path)
    for args in (["--name", "Jane Doe", "--phone", "(212) 555-0123", "--email",
                  "jane@example.com", "--ref", "LUM-1"],
                 ["--name", "Maria Lopez", "--phone", "+1 213 555 0147", "--timezone",
                  "America/Los_Angeles", "--channels", "sms", "--ref", "LUM-2"],
                 ["--name", "Paul Martin", "--email", "Paul@Example.com", "--locale", "fr"]):
        _ok(manual.run("--now", NOW, "patient", "add", *args))
    for args in (["LUM-1", "--treatment", "cellulite", "--area", "thighs", "--session-at",
                  "2026-03-02T10:30", "--next-session-at", "2026-03-16T10:30"],
                 ["LUM-2", "--treatment", "fat-dissolving", "--area", "chin", "--session-at",
                  "2026-03-02T14:00-05:00", "--session-number", "2"],
                 ["3", "--treatment", "hair-loss", "--session-at", "2026-03-02T16:00"]):
        _ok(manual.run("--now", NOW, "enroll", *args))
    assert _plan(clinic) == _plan(manual)
    assert {row[4] for row in _plan(clinic)} == {"pending"}


def test_importing_the_same_file_twice_changes_nothing(clinic: Clinic) -> None:
    path = _csv(clinic, DAY)
    _ok(_import(clinic, path))
    before = _state(clinic)
    assert before[:4] == (3, 3, 4, clinic.count("message")) and clinic.count("message") > 0
    again = clinic.json("--now", NOW, "import", str(path))
    assert again == {"rows": 3, "imported": 0, "unchanged": 3, "bad_rows": 0,
                     "patients_added": 0, "patients_updated": 0, "messages_planned": 0,
                     "problems": []}
    assert _state(clinic) == before
    # The next morning too: nothing new, nothing moved.
    out = _ok(_import(clinic, path, now="2026-03-03T09:30-05:00"))
    assert out.strip() == ("3 row(s): 0 imported, 3 unchanged; 0 patient(s) added, 0 updated; "
                           "0 message(s) planned.")
    assert _state(clinic) == before


def test_json_report(clinic: Clinic) -> None:
    report = clinic.json("--now", NOW, "import", str(_csv(clinic, DAY)))
    assert report == {"rows": 3, "imported": 3, "unchanged": 0, "bad_rows": 0,
                      "patients_added": 3, "patients_updated": 0,
                      "messages_planned": clinic.count("message"), "problems": []}


BAD_ROWS = [
    ("LUM-3,Ann Bee,+1 555,,,,,cellulite,,2026-03-02T09:00,,", "phone",
     "'+1 555' is not a valid phone number"),
    ("LUM-3,Ann Bee,,ann@,,,,cellulite,,2026-03-02T09:00,,", "email",
     "'ann@' is not a valid email address"),
    ("LUM-3,Ann Bee,,,,,,cellulite,,2026-03-02T09:00,,", "phone",
     "give phone or email so the patient can be reached"),
    ("LUM-3,Ann Bee,,ann@example.com,,,sms,cellulite,,2026-03-02T09:00,,", "channels",
     "sms needs a phone number"),
    ("LUM-3,Ann Bee,+12125550188,,Mars/Olympus,,,cellulite,,2026-03-02T09:00,,", "timezone",
     "'Mars/Olympus' is not an IANA time zone"),
    ("LUM-3,Ann Bee,+12125550188,,,xx,,cellulite,,2026-03-02T09:00,,", "locale",
     "'xx' has no message templates; use one of en, fr"),
    ("LUM-3,Ann Bee,+12125550188,,,,,botox,,2026-03-02T09:00,,", "treatment",
     "unknown treatment 'botox'; known: "),
    ("LUM-3,Ann Bee,+12125550188,,,,,,,2026-03-02T09:00,,", "treatment", "is empty"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,02/03/2026 9:00,,", "session_at",
     "'02/03/2026 9:00' is not an ISO 8601 time"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,,,", "session_at", "is empty"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-03T09:00,,", "session_at",
     "is in the future"),
    ("LUM-3,,+12125550188,,,,,cellulite,,2026-03-02T09:00,,", "name", "is empty"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,two,", "session_number",
     "'two' is not a whole number"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,0,", "session_number",
     "must be between 1 and 500"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,,2026-03-01T09:00",
     "next_session_at", "must be after session_at"),
    ("LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,,next week",
     "next_session_at", "'next week' is not an ISO 8601 time"),
    (f"{'X' * 65},Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,,", "ref",
     "at most 64"),
    ("LUM-3,Ann, Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,,", "row",
     "has 13 cells but the header names 12 columns"),
]


@pytest.mark.parametrize(("row", "column", "says"), BAD_ROWS)
def test_a_bad_row_stops_the_whole_file(clinic: Clinic, row: str, column: str,
                                        says: str) -> None:
    _ok(_import(clinic, _csv(clinic, [JANE], name="yesterday.csv")))
    before = _state(clinic)
    result = _import(clinic, _csv(clinic, [MARIA, row, PAUL]))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = _stderr_lines(result)
    assert lines[0].startswith(f"error: line 3: {column}: "), lines
    assert says in lines[0], lines[0]
    assert lines[-1].startswith("error: ") and "nothing imported" in lines[-1]
    assert result.stdout == ""
    assert _state(clinic) == before


def test_every_bad_row_is_listed_with_its_line(clinic: Clinic) -> None:
    # Quoted cells across two lines: a row is named by the line it starts on.
    rows = ['LUM-7,Eve Stone,+12125550166,,,,,cellulite,"inner\nthighs",2026-03-02T09:00,,',
            'LUM-3,Ann Bee,+1 555,,,,,botox,"left\narm",2026-03-02T09:00,,', "", PAUL,
            "LUM-4,,+12125550177,,,,,cellulite,,yesterday,,"]
    result = _import(clinic, _csv(clinic, rows))
    assert result.exit_code == 2
    assert _stderr_lines(result)[:-1] == [
        "error: line 4: phone: '+1 555' is not a valid phone number; write it with its "
        "country code, e.g. +1 212 555 0123",
        "error: line 4: treatment: unknown treatment 'botox'; known: bio-revitalization, "
        "cellulite, fat-dissolving, hair-loss, hyaluronic-acid, mesobotox",
        "error: line 8: name: is empty; every row needs the patient's name",
        "error: line 8: session_at: 'yesterday' is not an ISO 8601 time; write e.g. "
        "2026-11-22T14:30 or 2026-11-22T14:30-05:00",
    ]
    assert tuple(clinic.count(t) for t in TABLES) == (0, 0, 0, 0, 0)


def test_skip_invalid_imports_the_good_rows_and_lists_the_bad(clinic: Clinic) -> None:
    rows = [JANE, "LUM-3,Ann Bee,+1 555,,,,,cellulite,,2026-03-02T09:00,,", PAUL,
            "LUM-4,Bob Ray,+12125550177,,,,,botox,,2026-03-02T09:00,,"]
    result = _import(clinic, _csv(clinic, rows), "--skip-invalid")
    out = _ok(result)
    assert _stderr_lines(result) == [
        "skipped: line 3: phone: '+1 555' is not a valid phone number; write it with its "
        "country code, e.g. +1 212 555 0123",
        "skipped: line 5: treatment: unknown treatment 'botox'; known: bio-revitalization, "
        "cellulite, fat-dissolving, hair-loss, hyaluronic-acid, mesobotox",
    ]
    planned = clinic.count("message")
    assert out.strip() == (f"4 row(s): 2 imported, 0 unchanged, 2 skipped; 2 patient(s) added, "
                           f"0 updated; {planned} message(s) planned.")
    assert [row[1] for row in _patients(clinic)] == ["Jane Doe", "Paul Martin"]


def test_skip_invalid_json_lists_the_problems(clinic: Clinic) -> None:
    rows = [PAUL, "LUM-3,Ann Bee,+12125550188,,,,,cellulite,,2026-03-02T09:00,x,"]
    report = clinic.json("--now", NOW, "import", str(_csv(clinic, rows)), "--skip-invalid")
    assert report["problems"] == [{"line": 3, "field": "session_number",
                                   "problem": "'x' is not a whole number; write 1, 2, 3..."}]
    assert (report["rows"], report["imported"], report["bad_rows"]) == (2, 1, 1)
    assert report["patients_added"] == 1 == clinic.count("patient")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\xef\xbb\xbf\r\n  \r\n", "is empty"),
        (HEADER.replace(",next_session_at", "").encode() + b"\nLUM-1,Jane Doe",
         "the header has no column next_session_at"),
        (b"LUM-1,Jane Doe,+12125550123\n", "the first line is not the header"),
        (HEADER.replace(",", ";").encode(), "separated by ';'"),
        (f"{HEADER}\nLUM-1,Jos\xe9 Diaz,+12125550123,,,,,cellulite,,2026-03-02T09:00,,\n"
         .encode("latin-1"), "is not UTF-8 text (byte 0xe9 on line 2)"),
        (f"{HEADER},phone\n".encode(), "column phone appears twice"),
        (f'{HEADER}\n{PAUL}\nLUM-1,"Jane Doe,+12125550123\n{MARIA}\n'.encode(),
         "the row starting on line 3 is not valid CSV (unexpected end of data)"),
        (f'{HEADER}\nLUM-1,"Jane" Doe,+12125550123\n'.encode(),
         "the row starting on line 2 is not valid CSV"),
    ],
)
def test_a_bad_file_is_one_line(clinic: Clinic, content: bytes | None, says: str) -> None:
    path = clinic.folder / "export.csv"
    if content is not None:
        path.write_bytes(content)
    result = _import(clinic, path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: file: {path}"), lines[0]
    assert says in lines[0], lines[0]
    assert tuple(clinic.count(t) for t in TABLES) == (0, 0, 0, 0, 0)


def test_a_folder_is_not_a_file(clinic: Clinic) -> None:
    result = _import(clinic, clinic.folder)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: file: {clinic.folder} is a folder; give the CSV " \
        "file inside it"


def test_excel_bom_any_column_order_and_extra_columns(clinic: Clinic) -> None:
    header = ("Notes,SESSION_AT,name,phone,email,timezone,locale,channels,treatment,area,"
              "session_number,next_session_at,ref,paid")
    rows = ['"called back, happy",2026-03-02T10:30,Jane Doe,(212) 555-0123,,,,,cellulite,,,,'
            "LUM-1,yes"]
    out = _ok(_import(clinic, _csv(clinic, rows, header=header, prefix=b"\xef\xbb\xbf")))
    assert out.startswith("1 row(s): 1 imported,")
    assert _patients(clinic) == [("LUM-1", "Jane Doe", "+12125550123", None,
                                  "America/New_York", "en", "sms")]
    assert _sessions(clinic, "Jane Doe") == [(1, "completed", "2026-03-02 15:30:00.000000")]


def test_two_sessions_of_one_patient_in_reverse_order(clinic: Clinic) -> None:
    second = "LUM-1,Jane Doe,+12125550123,,,,,cellulite,,2026-03-02T10:30,,2026-03-16T10:30"
    first = "LUM-1,Jane Doe,+12125550123,,,,,cellulite,,2026-02-16T10:30,,2026-03-02T10:30"
    path = _csv(clinic, [second, first])
    out = _ok(_import(clinic, path))
    assert out.startswith("2 row(s): 2 imported, 0 unchanged; 1 patient(s) added,")
    assert clinic.count("course") == 1
    assert _sessions(clinic, "Jane Doe") == [(1, "completed", "2026-02-16 15:30:00.000000"),
                                             (2, "completed", "2026-03-02 15:30:00.000000"),
                                             (3, "booked", "2026-03-16 14:30:00.000000")]
    before = _state(clinic)
    _ok(_import(clinic, path))
    assert _state(clinic) == before


def test_a_changed_phone_in_a_later_file_updates_the_patient(clinic: Clinic) -> None:
    _ok(_import(clinic, _csv(clinic, DAY)))
    messages = clinic.count("message")
    changed = JANE.replace("(212) 555-0123", "+1 646 555 0199")
    out = _ok(_import(clinic, _csv(clinic, [changed, MARIA, PAUL], name="fixed.csv")))
    assert out.strip() == ("3 row(s): 1 imported, 2 unchanged; 0 patient(s) added, 1 updated; "
                           "0 message(s) planned.")
    assert _patients(clinic)[0][:3] == ("LUM-1", "Jane Doe", "+16465550199")
    assert clinic.count("patient") == 3 and clinic.count("message") == messages
    assert clinic.rows("SELECT detail FROM event WHERE kind = 'patient.updated'") == [("phone",)]


def test_an_empty_cell_keeps_what_is_stored(clinic: Clinic) -> None:
    _ok(_import(clinic, _csv(clinic, DAY)))
    before = _state(clinic)
    # Jane without her email and channels: her email stays, and so does her consent.
    sparse = "LUM-1,Jane Doe,+12125550123,,,,,cellulite,thighs,2026-03-02T10:30,,"
    out = _ok(_import(clinic, _csv(clinic, [sparse], name="sparse.csv")))
    assert out.startswith("1 row(s): 0 imported, 1 unchanged;")
    assert _state(clinic) == before


def test_patients_without_a_ref_match_by_name_and_phone_or_email(clinic: Clinic) -> None:
    _ok(clinic.run("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123"))
    _ok(clinic.run("patient", "add", "--name", "Paul Martin", "--email", "paul@example.com"))
    rows = [",Jane Doe,212-555-0123,,,,,cellulite,,2026-03-02T10:30,,",
            ",Paul Martin,,paul@example.com,,,,hair-loss,,2026-03-02T11:30,,",
            # Same phone, another name: another patient.
            ",John Doe,+12125550123,,,,,cellulite,,2026-03-02T12:30,,"]
    out = _ok(_import(clinic, _csv(clinic, rows)))
    assert out.startswith("3 row(s): 3 imported, 0 unchanged; 1 patient(s) added, 0 updated;")
    assert [row[1] for row in _patients(clinic)] == ["Jane Doe", "Paul Martin", "John Doe"]
    assert clinic.rows("SELECT patient_id, treatment FROM course ORDER BY patient_id") == [
        (1, "cellulite"), (2, "hair-loss"), (3, "cellulite")]


def test_a_new_ref_is_given_to_the_patient_added_by_hand(clinic: Clinic) -> None:
    _ok(clinic.run("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123"))
    out = _ok(_import(clinic, _csv(clinic, [JANE])))
    assert out.startswith("1 row(s): 1 imported, 0 unchanged; 0 patient(s) added, 1 updated;")
    assert _patients(clinic) == [("LUM-1", "Jane Doe", "+12125550123", "jane@example.com",
                                  "America/New_York", "en", "sms")]  # consent not widened


def test_one_patient_with_two_phones_in_one_file_is_refused(clinic: Clinic) -> None:
    other = "LUM-1,Jane Doe,+12125550999,,,,,cellulite,,2026-02-16T10:30,,"
    result = _import(clinic, _csv(clinic, [JANE, MARIA, other]))
    assert result.exit_code == 2
    assert _stderr_lines(result)[0] == (
        "error: line 4: phone: '+12125550999' contradicts line 2 ('+12125550123') for the "
        "same patient; give one value")
    assert clinic.count("patient") == 0


def test_a_ref_and_a_name_match_disagreeing_in_one_file_are_refused(clinic: Clinic) -> None:
    # The second row has no ref but is Jane by name and phone, with another email.
    other = ",Jane Doe,+12125550123,jd@example.com,,,,cellulite,,2026-03-02T11:30,,"
    path = _csv(clinic, [JANE, other])
    result = _import(clinic, path)
    assert result.exit_code == 2
    assert _stderr_lines(result)[0] == (
        "error: line 3: email: 'jd@example.com' contradicts line 2 ('jane@example.com') for "
        "the same patient; give one value")
    assert tuple(clinic.count(t) for t in TABLES) == (0, 0, 0, 0, 0)
    out = _ok(_import(clinic, path, "--skip-invalid"))
    assert out.startswith("2 row(s): 1 imported, 0 unchanged, 1 skipped;")
    assert _patients(clinic)[0][3] == "jane@example.com"


def test_a_row_the_database_refuses_rolls_back_the_whole_file(clinic: Clinic) -> None:
    # Jane's booked session 2 was cancelled; the file says she came at that time.
    _ok(clinic.run("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                   "--ref", "LUM-1"))
    _ok(clinic.run("--now", "2026-02-16T12:00-05:00", "enroll", "LUM-1", "--treatment",
                   "cellulite", "--session-at", "2026-02-16T10:30", "--next-session-at",
                   "2026-02-23T10:30"))
    _ok(clinic.run("--now", "2026-02-17T12:00-05:00", "session", "cancel", "2"))
    before = _state(clinic)
    came = "LUM-1,Jane Doe,+12125550123,,,,,cellulite,,2026-02-23T10:30,,"
    path = _csv(clinic, [MARIA, came])
    result = _import(clinic, path)
    assert result.exit_code == 2
    assert _stderr_lines(result)[0] == (
        "error: line 3: session_at: session 2 at that time was cancelled; enroll with the time "
        "the patient actually came")
    assert _state(clinic) == before  # Maria, applied first, was rolled back too
    report = import_csv(clinic.app(clock=lambda: utc(NOW)), path)
    assert import_report_json(report) == {
        "rows": 2, "imported": 0, "unchanged": 0, "bad_rows": 1, "patients_added": 0,
        "patients_updated": 0, "messages_planned": 0,
        "problems": [{"line": 3, "field": "session_at", "problem": "session 2 at that time was "
                      "cancelled; enroll with the time the patient actually came"}]}
    assert _state(clinic) == before
    out = _ok(_import(clinic, path, "--skip-invalid"))
    assert out.startswith("2 row(s): 1 imported, 0 unchanged, 1 skipped; 1 patient(s) added")
    assert [row[1] for row in _patients(clinic)] == ["Jane Doe", "Maria Lopez"]


def test_the_library_reports_progress_and_problems(clinic: Clinic) -> None:
    calls: list[tuple[int, int]] = []
    path = _csv(clinic, [*DAY, "LUM-3,Ann Bee,+1 555,,,,,cellulite,,2026-03-02T09:00,,"])
    app = clinic.app(clock=lambda: utc(NOW))
    report = import_csv(app, path, on_row=lambda done, total: calls.append((done, total)))
    assert calls == []  # all or nothing: a bad row and no row is applied
    assert report.problems == [RowProblem(5, "phone", "'+1 555' is not a valid phone number; "
                                          "write it with its country code, e.g. +1 212 555 0123")]
    assert str(report.problems[0]).startswith("line 5: phone: '+1 555' is not a valid phone")
    assert (report.rows, report.imported, report.patients_added) == (4, 0, 0)
    report = import_csv(app, path, skip_invalid=True,
                        on_row=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert isinstance(report, ImportReport)
    assert json.loads(json.dumps(import_report_json(report)))["bad_rows"] == 1
    assert report.summary() == (f"4 row(s): 3 imported, 0 unchanged, 1 skipped; 3 patient(s) "
                                f"added, 0 updated; {clinic.count('message')} message(s) "
                                "planned.")
