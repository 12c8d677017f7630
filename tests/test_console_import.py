"""Console: import a CSV (admin): check first (nothing written), then all or the good rows."""

from __future__ import annotations

import html
import logging
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from aftercare.errors import UserError
from aftercare.web.console.imports import uploads
from conftest import Clinic
from console_kit import EMAILS, Console, console

__all__ = ["console"]

HEADER = ("ref,name,phone,email,timezone,locale,channels,treatment,area,session_at,"
          "session_number,next_session_at")
# The fixed clock is 2026-12-01 10:00 in New York: these sessions took place this morning.
JANE = "LUM-1,Jane Doe,(212) 555-0123,jane@example.com,,,,cellulite,thighs,2026-12-01T08:30,,"
MARIA = "LUM-2,Maria Lopez,+1 213 555 0147,,America/Los_Angeles,,sms,fat-dissolving,chin," \
        "2026-12-01T09:00-05:00,2,"
PAUL = ",Paul Martin,,paul@example.com,,fr,,hair-loss,,2026-12-01T09:30,,"
BAD_TREATMENT = "LUM-3,Rita Bad,+1 212 555 0199,,,,,botox-deluxe,,2026-12-01T09:00,,"
BAD_NUMBER = "LUM-4,Sam Worse,+1 212 555 0198,,,,,cellulite,,2026-12-01T09:00,two,"
TABLES = ("patient", "course", "session", "message", "event")
TOKEN = re.compile(r'name="token" value="([^"]+)"')


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return "\r\n".join([header, *rows, ""]).encode()


def _upload(console: Console, data: bytes, name: str = "day.csv") -> httpx.Response:
    return console.post("/import", files={"file": (name, data, "text/csv")})


def _token(page: httpx.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text
    return found.group(1)


def _state(clinic: Clinic) -> tuple[int, ...]:
    return tuple(clinic.count(table) for table in TABLES)


def _names(clinic: Clinic) -> list[str]:
    return [name for (name,) in clinic.rows("SELECT name FROM patient ORDER BY name")]


def test_the_upload_form(console: Console) -> None:
    console.sign_in("admin")
    page = console.get("/import")
    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.text
    assert '<label for="f-file">CSV file</label>' in page.text and 'type="file"' in page.text


@pytest.mark.parametrize("role", ["frontdesk", "clinician"])
def test_only_admins_may_import(console: Console, clinic: Clinic, role: str) -> None:
    console.sign_in("admin")
    token = _token(_upload(console, _csv(JANE)))
    console.sign_in(role)
    assert console.get("/import").status_code == 403
    assert _upload(console, _csv(JANE)).status_code == 403
    answer = console.post("/import/apply", {"token": token, "mode": "all"})
    assert answer.status_code == 403
    assert _state(clinic) == (0, 0, 0, 0, 0)
    assert ">Import<" not in console.get("/").text  # not in the navigation either


def test_a_good_file_is_checked_without_writing_then_imported_all(
        console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    checked = _upload(console, _csv(JANE, MARIA, PAUL))
    assert checked.status_code == 200, checked.text
    assert _state(clinic) == (0, 0, 0, 0, 0)
    assert "Nothing has been saved yet." in checked.text
    assert 'value="all">Import all</button>' in checked.text
    assert "Import only the good rows" not in checked.text
    would_plan = int(re.search(r"Messages to plan</dt><dd>(\d+)", checked.text)[1])  # type: ignore[index]
    assert "Patients to add</dt><dd>3<" in checked.text and would_plan > 0

    done = console.post("/import/apply", {"token": _token(checked), "mode": "all",
                                          "filename": "day.csv"})
    assert done.status_code == 200, done.text
    assert "Rows imported</dt><dd>3<" in done.text
    assert "Patients added</dt><dd>3<" in done.text
    assert f"Messages planned</dt><dd>{would_plan}<" in done.text
    assert clinic.count("message") == would_plan
    assert _names(clinic) == ["Jane Doe", "Maria Lopez", "Paul Martin"]
    # The history names the admin who imported.
    assert {actor for (actor,) in clinic.rows("SELECT actor FROM event")} == {EMAILS["admin"]}
    # The upload is gone: the same form posted again imports nothing twice.
    again = console.post("/import/apply", {"token": _token(checked), "mode": "all"})
    assert again.status_code == 400 and 'id="e-file"' in again.text
    assert "already imported" in again.text


def test_bad_rows_are_shown_with_their_line_and_column(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    checked = _upload(console, _csv(JANE, BAD_TREATMENT, PAUL, BAD_NUMBER))
    assert checked.status_code == 200
    assert _state(clinic) == (0, 0, 0, 0, 0)
    rows = re.findall(r"<tr><td>(\d+)</td><td><code>([a-z_]+)</code></td><td>([^<]*)</td></tr>",
                      checked.text)
    assert [(line, column) for line, column, _ in rows] == [("3", "treatment"),
                                                            ("5", "session_number")]
    assert "unknown treatment &#39;botox-deluxe&#39;" in rows[0][2]
    assert "is not a whole number" in html.unescape(rows[1][2])
    assert "Import all" not in checked.text
    assert 'value="good">Import only the good rows</button>' in checked.text
    assert "2 good rows will be imported" in checked.text
    # "Import all" posted anyway (a forged or stale form) writes nothing.
    refused = console.post("/import/apply", {"token": _token(checked), "mode": "all"})
    assert refused.status_code == 400
    assert _state(clinic) == (0, 0, 0, 0, 0)


def test_import_only_the_good_rows_imports_exactly_those(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    checked = _upload(console, _csv(JANE, BAD_TREATMENT, PAUL, BAD_NUMBER))
    done = console.post("/import/apply", {"token": _token(checked), "mode": "good"})
    assert done.status_code == 200, done.text
    assert _names(clinic) == ["Jane Doe", "Paul Martin"]
    assert "Rows imported</dt><dd>2<" in done.text and "Rows skipped</dt><dd>2<" in done.text
    assert "botox-deluxe" in done.text  # the skipped rows are listed again
    assert {actor for (actor,) in clinic.rows("SELECT actor FROM event")} == {EMAILS["admin"]}


@pytest.mark.parametrize(("data", "text"), [
    (b"\xff\xfe not utf-8", "is not UTF-8 text"),
    (_csv(JANE, header="ref,name"), "the header has no column"),
    (b"", "is empty"),
])
def test_a_broken_file_is_refused_next_to_the_file_field(console: Console, clinic: Clinic,
                                                         data: bytes, text: str) -> None:
    console.sign_in("admin")
    answer = _upload(console, data, name="../../secret/day.csv")
    assert answer.status_code == 400
    error = answer.text.split('id="e-file"')[1].split("</small>")[0]
    assert text in error and "day.csv" in error and "secret" not in error
    assert _state(clinic) == (0, 0, 0, 0, 0)


def test_no_file_chosen(console: Console) -> None:
    console.sign_in("admin")
    answer = console.post("/import", files={"file": ("", b"", "application/octet-stream")})
    assert answer.status_code == 400 and "Choose the CSV file to import." in answer.text


def test_a_file_over_the_clinics_limit_is_refused(console: Console, clinic: Clinic) -> None:
    console.app.settings.web.max_upload_bytes = 1024
    console.sign_in("admin")
    answer = _upload(console, _csv(*[JANE] * 20))
    assert answer.status_code == 413 and "larger than the console accepts" in answer.text
    assert _state(clinic) == (0, 0, 0, 0, 0)


def test_an_upload_belongs_to_the_session_that_checked_it(console: Console,
                                                          clinic: Clinic) -> None:
    console.sign_in("admin")
    token = _token(_upload(console, _csv(JANE)))
    console.sign_in("admin")  # another browser of the same admin: another session
    answer = console.post("/import/apply", {"token": token, "mode": "all"})
    assert answer.status_code == 400
    for forged in ("../../etc/passwd", "x" * 40, ""):
        assert console.post("/import/apply", {"token": forged, "mode": "all"}).status_code == 400
    assert _state(clinic) == (0, 0, 0, 0, 0)


def test_uploads_are_kept_privately_and_deleted_after_import(console: Console) -> None:
    console.sign_in("admin")
    token = _token(_upload(console, _csv(JANE)))
    kept = [p for p in uploads._dir().glob("*.csv") if token in p.name]
    assert len(kept) == 1
    assert uploads._dir().stat().st_mode & 0o077 == 0  # only the service's user reads it
    assert console.post("/import/apply", {"token": token, "mode": "all"}).status_code == 200
    assert not kept[0].exists()


def test_the_import_needs_the_csrf_token(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    token = _token(_upload(console, _csv(JANE)))
    answer = console.post("/import/apply", {"token": token, "mode": "all"}, csrf="forged")
    assert answer.status_code == 403
    assert _state(clinic) == (0, 0, 0, 0, 0)


def test_patient_data_is_escaped_and_kept_out_of_the_logs(
        console: Console, clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    console.sign_in("admin")
    evil = "<script>alert(1)</script>"
    checked = _upload(console, _csv(JANE, f"LUM-9,Eve,+1 212 555 0111,,,,,cellulite,,"
                                          f"2026-12-01T09:00,{evil},"))
    assert evil not in checked.text and "&lt;script&gt;" in checked.text
    done = console.post("/import/apply", {"token": _token(checked), "mode": "good",
                                          "filename": evil})
    assert done.status_code == 200
    assert evil not in done.text
    for secret in ("Jane Doe", "555", "jane@example.com", "script"):
        assert secret not in caplog.text


def test_an_upload_left_for_more_than_an_hour_expires(console: Console, clinic: Clinic) -> None:
    console.sign_in("admin")
    token = _token(_upload(console, _csv(JANE)))
    kept = next(p for p in uploads._dir().glob("*.csv") if token in p.name)
    old = time.time() - 2 * 3600
    os.utime(kept, (old, old))
    answer = console.post("/import/apply", {"token": token, "mode": "all"})
    assert answer.status_code == 400 and "has expired" in answer.text
    assert _state(clinic) == (0, 0, 0, 0, 0)
    _upload(console, _csv(PAUL))  # the next upload sweeps it away
    assert not kept.exists()


def test_uploads_left_by_a_crashed_service_are_swept_and_the_folder_is_private(
        tmp_path: Path) -> None:
    from aftercare.web.console.imports import KEEP_SECONDS, Uploads

    folder = tmp_path / "uploads"
    kept = Uploads(folder)
    token = kept.keep(7, b"ref,name\n")
    stale = folder / "3-left-by-a-crash.csv"
    stale.write_bytes(b"patient data")
    old = time.time() - KEEP_SECONDS - 60
    os.utime(stale, (old, old))
    Uploads(folder).sweep()  # a new service, the same folder
    assert not stale.exists()
    assert kept.load(7, token) == b"ref,name\n"
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o755)
    with pytest.raises(UserError, match="not private"):
        Uploads(folder).keep(7, b"x")
