"""The import plans in bulk, chunk by chunk, exactly as enrolling row by row would.

Every test imports the same file into two clinics with the same history: one through the
bulk path, one through the per-row path (`_apply_row`: the commands' own `update_patient`
and `enroll` for each row), and compares every patient, course, session, message and
history event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aftercare import csv_import
from aftercare.csv_import import ImportReport, import_csv
from aftercare.db import migrate
from conftest import CONFIG, Clinic, FixedClock, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

NOW = "2026-03-02T18:00-05:00"
HEADER = ("ref,name,phone,email,timezone,locale,channels,treatment,area,session_at,"
          "session_number,next_session_at")
# A day's export: new patients on every treatment and channel, a patient seen twice (the
# first row books the second visit), matches by ref, by name and phone, by name and email.
DAY = [
    "LUM-1,Jane Doe,(212) 555-0123,jane@example.com,,,,cellulite,thighs,2026-02-16T10:30,,"
    "2026-03-02T10:30",
    "LUM-1,Jane Doe,(212) 555-0123,jane@example.com,,,,cellulite,thighs,2026-03-02T10:30,,"
    "2026-03-16T10:30",
    "LUM-2,Maria Lopez,+1 213 555 0147,,America/Los_Angeles,,sms,fat-dissolving,chin,"
    "2026-03-02T14:00-05:00,2,",
    ",Paul Martin,,Paul@Example.com,,fr,,hair-loss,,2026-03-02T16:00,,",
    ",Paul Martin,,Paul@example.com,,,,mesobotox,forehead,2026-03-02T16:30,,2026-03-30T16:30",
    "LUM-3,Ann Bee,+12125550188,ann@example.com,Europe/Paris,fr,email,bio-revitalization,face,"
    "2026-03-01T09:00,,2026-03-15T09:00",
    ",Bob Stone,+12125550199,,,,,hyaluronic-acid,lips,2026-02-20T11:00,3,",
    "LUM-4,Cleo West,+12125550111,cleo@example.com,,,\"sms,email\",cellulite,,"
    "2026-02-23T12:00,,",
    "LUM-4,Cleo West,+12125550111,cleo@example.com,,,\"sms,email\",cellulite,,"
    "2026-03-02T12:00,,",
]
PLAN = ("SELECT {who}, c.treatment, s.at, m.step, m.occurrence, m.channel, m.planned_at, "
        "m.send_after, m.expires_at, m.status, m.last_error FROM message m "
        "JOIN patient p ON m.patient_id = p.id JOIN course c ON m.course_id = c.id "
        "JOIN session s ON m.session_id = s.id")
WHO = "coalesce(p.ref, p.name || ' ' || coalesce(p.phone, p.email, ''))"


def _clinic(root: Path, name: str) -> Clinic:
    folder = root / name
    folder.mkdir()
    config = folder / "aftercare.toml"
    config.write_text(CONFIG.format(db=folder / "clinic.db"), encoding="utf-8")
    made = Clinic(folder, config, folder / "clinic.db")
    migrate(made.app().engine)
    return made


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Clinic, Clinic]:
    """Two empty clinics: the first imports in bulk, the second row by row."""
    return _clinic(tmp_path, "bulk"), _clinic(tmp_path, "rows")


@pytest.fixture(params=[500, 2], ids=["chunk500", "chunk2"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Chunks of the default size, and of two rows (rows of one patient in two chunks)."""
    monkeypatch.setattr(csv_import, "CHUNK_ROWS", request.param)
    yield request.param


def _csv(clinic: Clinic, rows: list[str], name: str = "day.csv") -> Path:
    path = clinic.folder / name
    path.write_text("\r\n".join([HEADER, *rows, ""]), encoding="utf-8")
    return path


def _per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every row down the per-row path, as before bulk planning."""
    def refuse(self: object, row: object, said: object) -> object:
        raise csv_import._NotInBulk

    monkeypatch.setattr(csv_import._Bulk, "apply", refuse)


def _import(clinic: Clinic, rows: list[str], *, bulk: bool, monkeypatch: pytest.MonkeyPatch,
            now: str = NOW, skip_invalid: bool = False,
            ticks: list[tuple[int, int]] | None = None) -> ImportReport:
    with monkeypatch.context() as patch:
        if not bulk:
            _per_row(patch)
        app = clinic.app(clock=FixedClock(utc(now)))
        return import_csv(app, _csv(clinic, rows), skip_invalid=skip_invalid, actor="cli",
                          on_row=None if ticks is None else
                          lambda done, total: ticks.append((done, total)))


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lines of the rows that take the per-row path."""
    lines: list[int] = []
    per_row = csv_import._apply_row

    def spy(conn: Any, app: Any, planner: Any, locales: Any, row: Any, *rest: Any) -> Any:
        lines.append(row.line)
        return per_row(conn, app, planner, locales, row, *rest)

    monkeypatch.setattr(csv_import, "_apply_row", spy)
    return lines


def _dump(clinic: Clinic) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that matters, named by what it is about rather than by its id."""
    session = ("(SELECT {who} || '/' || c2.treatment || '/' || s2.at FROM session s2 "
               "JOIN course c2 ON s2.course_id = c2.id JOIN patient p2 ON c2.patient_id = p2.id "
               "WHERE s2.id = e.session_id)")
    message = ("(SELECT m2.step || '/' || m2.occurrence || '/' || m2.channel FROM message m2 "
               "WHERE m2.id = e.message_id)")
    return {
        "patients": clinic.rows(
            "SELECT ref, name, phone, email, timezone, locale, channels, created_at, "
            "sms_opted_out_at, forgotten_at FROM patient ORDER BY ref, name, phone, email"),
        "courses": clinic.rows(
            f"SELECT {WHO}, c.treatment, c.area, c.sessions_planned, c.spacing_days, c.status, "
            "c.created_at FROM course c JOIN patient p ON c.patient_id = p.id ORDER BY 1, 2, 7"),
        "sessions": clinic.rows(
            f"SELECT {WHO}, c.treatment, s.at, s.number, s.number_fixed, s.moves, s.status, "
            "s.created_at FROM session s JOIN course c ON s.course_id = c.id "
            "JOIN patient p ON c.patient_id = p.id ORDER BY 1, 2, 3"),
        "messages": clinic.rows(PLAN.format(who=WHO) + " ORDER BY 1, 2, 3, 4, 5, 6"),
        # Per patient in the order they happened (ids), with what they are about.
        "events": clinic.rows(
            f"SELECT {WHO}, e.at, e.kind, e.detail, e.actor, "
            "(SELECT treatment FROM course WHERE id = e.course_id), "
            f"{session.format(who=WHO.replace('p.', 'p2.'))}, {message} "
            "FROM event e JOIN patient p ON e.patient_id = p.id ORDER BY 1, e.id"),
    }


def _same(bulk: Clinic, rows: Clinic) -> dict[str, list[tuple[Any, ...]]]:
    got, want = _dump(bulk), _dump(rows)
    for table in want:
        assert got[table] == want[table], table
    return got


def _both(pair: tuple[Clinic, Clinic], rows: list[str], monkeypatch: pytest.MonkeyPatch,
          **options: Any) -> tuple[ImportReport, ImportReport]:
    bulk, by_row = pair
    made = (_import(bulk, rows, bulk=True, monkeypatch=monkeypatch, **options),
            _import(by_row, rows, bulk=False, monkeypatch=monkeypatch,
                    **{k: v for k, v in options.items() if k != "ticks"}))
    assert made[0] == made[1]
    return made


def _history(pair: tuple[Clinic, Clinic], *commands: tuple[str, ...]) -> None:
    """The same commands in both clinics (patients added, enrolled, booked by hand)."""
    for clinic in pair:
        for args in commands:
            result = clinic.run("--now", args[0], *args[1:])
            assert result.exit_code == 0, result.output + result.stderr


def test_a_days_file_plans_every_row_as_enrolling_row_by_row(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: list[tuple[int, int]] = []
    per_row = _spy(monkeypatch)
    report = _import(pair[0], DAY, bulk=True, monkeypatch=monkeypatch, ticks=ticks)
    assert per_row == []  # every row planned in bulk
    assert _import(pair[1], DAY, bulk=False, monkeypatch=monkeypatch) == report
    assert report.imported == len(DAY) and report.patients_added == 6 and not report.problems
    dump = _same(*pair)
    assert len(dump["messages"]) == report.messages_planned > 50
    # Jane's second visit cancelled what her first one planned for the time between.
    assert {row[9] for row in dump["messages"]} == {"pending", "cancelled"}
    kinds = {row[2] for row in dump["events"]}
    assert {"course.started", "session.completed", "session.booked",
            "messages.planned"} <= kinds
    # Jane's second row completes the session her first row booked.
    jane = [row for row in dump["sessions"] if row[0] == "LUM-1"]
    assert [(row[3], row[6]) for row in jane] == [(1, "completed"), (2, "completed"),
                                                  (3, "booked")]
    # The progress bar moves through every row, in order.
    assert ticks == [(done, len(DAY)) for done in range(1, len(DAY) + 1)]


def test_importing_the_same_file_again_changes_nothing(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _both(pair, DAY, monkeypatch)
    before = _same(*pair)
    again, _ = _both(pair, DAY, monkeypatch, now="2026-03-03T09:30-05:00")
    assert (again.imported, again.unchanged, again.messages_planned) == (0, len(DAY), 0)
    assert _same(*pair) == before


EXISTING = (
    (NOW, "patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--email",
     "jane@example.com", "--ref", "LUM-1"),
    ("2026-02-16T12:00-05:00", "enroll", "LUM-1", "--treatment", "cellulite", "--area",
     "thighs", "--session-at", "2026-02-16T10:30", "--next-session-at", "2026-03-02T10:30"),
    (NOW, "patient", "add", "--name", "Bob Stone", "--phone", "+12125550199"),
    ("2026-02-20T12:00-05:00", "enroll", "2", "--treatment", "hyaluronic-acid",
     "--session-at", "2026-02-20T11:00", "--next-session-at", "2026-03-06T11:00"),
    (NOW, "patient", "add", "--name", "Ann Bee", "--email", "ann@example.com", "--locale", "fr"),
    ("2026-02-10T12:00-05:00", "enroll", "3", "--treatment", "mesobotox", "--session-at",
     "2026-02-10T09:00", "--next-session-at", "2026-02-24T09:00"),
    ("2026-02-24T12:00-05:00", "session", "cancel", "6"),
)


def test_rows_for_patients_with_courses_and_bookings(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(pair, *EXISTING)
    rows = [
        # Completes the session booked by hand (matched by ref) and books the next one.
        "LUM-1,Jane Doe,,jane@example.com,,,,cellulite,,2026-03-02T10:30,,2026-03-16T10:30",
        # Came a day early (the booking moves to when she came), matched by name and phone.
        ",Bob Stone,+1 212 555 0199,,,,,hyaluronic-acid,,2026-03-01T11:00,,2026-03-20T11:00",
        # A new phone number: the patient is updated, their unsent messages follow.
        ",Ann Bee,+12125550177,ann@example.com,,,\"sms,email\",mesobotox,,2026-03-02T09:00,,",
        # A patient added by hand without a ref is given the file's.
        "LUM-9,Ann Bee,,ann@example.com,,,,hair-loss,,2026-03-02T09:30,,",
        # A new patient between them.
        ",Zoe Park,+12125550166,,,,,cellulite,,2026-03-02T11:00,,",
    ]
    per_row = _spy(monkeypatch)
    report = _import(pair[0], rows, bulk=True, monkeypatch=monkeypatch)
    # Only the rows that change a patient's details go through update_patient row by row.
    assert per_row == [4, 5]
    assert _import(pair[1], rows, bulk=False, monkeypatch=monkeypatch) == report
    assert not report.problems, report.problems
    assert (report.imported, report.patients_added, report.patients_updated) == (5, 1, 1)
    dump = _same(*pair)
    kinds = [row[2] for row in dump["events"]]
    assert {"session.rescheduled", "patient.updated", "message.cancelled"} <= set(kinds)
    again, _ = _both(pair, rows, monkeypatch)
    assert (again.imported, again.unchanged) == (0, len(rows))
    assert _same(*pair) == dump


def test_a_row_the_database_refuses_is_skipped_alone_with_skip_invalid(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(pair, *EXISTING)
    refused = ",Ann Bee,,ann@example.com,,,,mesobotox,,2026-02-24T09:00,,"  # was cancelled
    rows = [*DAY[:4], refused, *DAY[4:]]
    report, _ = _both(pair, rows, monkeypatch, skip_invalid=True)
    assert [(p.line, p.field) for p in report.problems] == [(6, "session_at")]
    assert "was cancelled" in report.problems[0].problem
    assert report.imported + report.unchanged == len(DAY) and report.imported > 0
    _same(*pair)


def test_one_bad_row_and_nothing_is_written(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(pair, *EXISTING)
    before = _same(*pair)
    # Refused by the database, after rows of earlier chunks were planned and written.
    refused = ",Ann Bee,,ann@example.com,,,,mesobotox,,2026-02-24T09:00,,"
    report, _ = _both(pair, [*DAY, refused], monkeypatch)
    assert report.bad_rows == 1 and report.imported == 0 and report.messages_planned == 0
    assert _same(*pair) == before
    # Refused by the checks: nothing is even applied.
    report, _ = _both(pair, [*DAY, ",Ann Bee,+1 555,,,,,cellulite,,2026-03-02T09:00,,"],
                      monkeypatch)
    assert [(p.line, p.field) for p in report.problems] == [(11, "phone")]
    assert _same(*pair) == before


def test_a_dry_run_writes_nothing_and_says_what_importing_would_do(
        pair: tuple[Clinic, Clinic], monkeypatch: pytest.MonkeyPatch) -> None:
    bulk, _ = pair
    app = bulk.app(clock=FixedClock(utc(NOW)))
    data = _csv(bulk, DAY).read_bytes()
    dry = csv_import.import_data(app, data, "day.csv", dry_run=True)
    assert bulk.count("message") == bulk.count("patient") == bulk.count("event") == 0
    real = csv_import.import_data(app, data, "day.csv")
    assert dry == real and real.messages_planned == bulk.count("message") > 0


def test_rows_that_update_patients_between_rows_planned_in_bulk(
        pair: tuple[Clinic, Clinic], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Patients added by hand without a ref: the file gives each one (an update), and
    # new patients come between them, so bulk and per-row rows alternate.
    names = [f"Pat Number{i}" for i in range(6)]
    _history(pair, *((NOW, "patient", "add", "--name", name, "--phone", f"+1212555020{i}")
                     for i, name in enumerate(names)))
    rows = []
    for i, name in enumerate(names):
        rows.append(f"R-{i},{name},+1212555020{i},,,,,cellulite,,2026-03-02T0{i}:00,,")
        rows.append(f"N-{i},New Number{i},+1212555030{i},,,,,hair-loss,,2026-03-02T0{i}:30,,")
    per_row = _spy(monkeypatch)
    report = _import(pair[0], rows, bulk=True, monkeypatch=monkeypatch)
    assert per_row == [2, 4, 6, 8, 10, 12]
    assert _import(pair[1], rows, bulk=False, monkeypatch=monkeypatch) == report
    assert (report.imported, report.patients_added, report.patients_updated) == (12, 6, 6)
    dump = _same(*pair)
    again, _ = _both(pair, rows, monkeypatch)
    assert (again.imported, again.unchanged) == (0, len(rows))
    assert _same(*pair) == dump
