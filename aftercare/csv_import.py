"""Import: a day's completed sessions from the clinic's system (CSV), enrolled in one go.

Two passes. The first reads and checks every row with the library's own validators and
writes nothing; the second matches each good row to a patient (adding or updating them)
and enrolls the session, in session order. By default the file is all or nothing: any bad
row and nothing is written. Enrolling is idempotent, so importing a file again changes
nothing. The format is described in docs/import.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.app import App
from aftercare.clock import parse_time, zone
from aftercare.db import require_schema
from aftercare.enrollment import SessionVisit, enroll, has_taken_place
from aftercare.errors import UserError
from aftercare.models import Patient
from aftercare.patients import (
    NewPatient,
    PatientChanges,
    add_patient,
    normalize_email,
    normalize_phone,
    parse_channels,
    update_patient,
)
from aftercare.planning import Planner

COLUMNS = ("ref", "name", "phone", "email", "timezone", "locale", "channels", "treatment",
           "area", "session_at", "session_number", "next_session_at")
# What a patient is, as far as two rows of one file can disagree about it.
PATIENT_COLUMNS = ("name", "phone", "email", "timezone", "locale", "channels")
SESSION_COLUMNS = ("area", "session_number", "next_session_at")
# The database's column sizes, for the free-text cells nothing else checks.
MAX_LENGTH = {"ref": 64, "name": 200, "area": 100}

OnRow = Callable[[int, int], None]


@dataclass(frozen=True)
class RowProblem:
    """Why one row of the file cannot be imported: its line, the column, what is wrong."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.problem}"


@dataclass
class ImportReport:
    """What an import did (or, with problems and no --skip-invalid, would have done)."""

    rows: int = 0  # data rows in the file (blank lines not counted)
    imported: int = 0  # rows that enrolled something or changed a patient
    unchanged: int = 0  # good rows already in the database as they are in the file
    patients_added: int = 0
    patients_updated: int = 0
    messages_planned: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def bad_rows(self) -> int:
        return len({p.line for p in self.problems})

    def summary(self) -> str:
        skipped = f", {self.bad_rows} skipped" if self.problems else ""
        return (f"{self.rows} row(s): {self.imported} imported, {self.unchanged} unchanged"
                f"{skipped}; {self.patients_added} patient(s) added, {self.patients_updated} "
                f"updated; {self.messages_planned} message(s) planned.")


def import_csv(app: App, path: Path, *, skip_invalid: bool = False,
               on_row: OnRow | None = None, actor: str | None = None) -> ImportReport:
    """Enroll every completed session listed in the CSV file at `path`.

    A problem with the file itself (missing, unreadable, not UTF-8, empty, a column missing
    from the header) raises UserError("file", ...). Problems with rows are returned in the
    report: without `skip_invalid` nothing is then written; with it the good rows are
    imported. `on_row(done, total)` is called after each row is applied. `actor` is who the
    history records (as in `App.db`).
    """
    return import_data(app, _read(path), str(path), skip_invalid=skip_invalid, on_row=on_row,
                       actor=actor)


def import_data(app: App, data: bytes, name: str, *, skip_invalid: bool = False,
                dry_run: bool = False, on_row: OnRow | None = None,
                actor: str | None = None) -> ImportReport:
    """`import_csv` on the bytes of a file called `name` (an upload, say).

    With `dry_run` every good row is applied in a transaction that is then rolled back:
    nothing is written, and the report says what importing the good rows would do,
    problems only the database can tell included.
    """
    text = _decode(data, name)
    checker = _Checker(app)
    report = ImportReport()
    good: list[_Row] = []
    for line, cells in _records(text, name):
        report.rows += 1
        row, problems = checker.row(line, cells)
        report.problems.extend(problems)
        if row is not None:
            good.append(row)
    good = [row for row in good if not _conflicts(row, checker, report.problems)]
    if report.problems and not (skip_invalid or dry_run):
        return report
    require_schema(app.engine)
    # Session 1 of a patient is completed before session 2, whatever the file's order.
    good.sort(key=lambda row: row.visit.session_at)
    _apply(app, good, report, skip_invalid=skip_invalid, dry_run=dry_run, on_row=on_row,
           actor=actor)
    report.problems.sort(key=lambda p: p.line)
    return report


# --- reading the file -------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("file", f"{path} does not exist; check the path and the "
                        "working folder") from None
    except IsADirectoryError:
        raise UserError("file", f"{path} is a folder; give the CSV file inside it") from None
    except PermissionError:
        raise UserError("file", f"{path} cannot be read (permission denied); give the "
                        "user running aftercare read access") from None
    except OSError as exc:
        raise UserError("file", f"{path} cannot be read ({exc.strerror}); check the "
                        "path") from None
    return data


def _decode(data: bytes, path: str) -> str:
    try:
        text = data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError("file", f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on "
                        f"line {line}); export it again as UTF-8 (Excel: \"CSV UTF-8\")") from None
    if not text.strip():
        raise UserError("file", f"{path} is empty; export it again with the header row "
                        f"{','.join(COLUMNS)}")
    return text


def _records(text: str, path: str) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number where the row starts, cells by column) for every non-blank data row."""
    # strict: a quote left open swallows the rest of the file into one cell; say so instead.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    index: dict[str, int] | None = None
    width = 0
    ended = 0  # the line the previous row ended on
    try:
        for cells in reader:
            start, ended = ended + 1, reader.line_num
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            if index is None:
                index = _header(cells, path)
                width = len(cells)
                continue
            if len(cells) > width:
                # Most often a comma inside an unquoted name or note.
                yield start, {"": f"has {len(cells)} cells but the header names {width} "
                              "columns; put cells that contain commas in double quotes"}
                continue
            yield start, {name: cells[i] if i < len(cells) else "" for name, i in index.items()}
    except csv.Error as exc:
        raise UserError("file", f"{path}: the row starting on line {ended + 1} is not valid "
                        f"CSV ({exc}); check its double quotes") from None


def _header(cells: list[str], path: str) -> dict[str, int]:
    names = [cell.lower() for cell in cells]
    for name in COLUMNS:
        if names.count(name) > 1:
            raise UserError("file", f"{path}: column {name} appears twice in the header; "
                            "keep one")
    missing = [name for name in COLUMNS if name not in names]
    if len(names) == 1 and ";" in names[0]:
        raise UserError("file", f"{path}: the columns are separated by ';'; export the file "
                        "with commas")
    if len(missing) == len(COLUMNS):
        raise UserError("file", f"{path}: the first line is not the header; it must name "
                        f"the columns {','.join(COLUMNS)}")
    if missing:
        raise UserError("file", f"{path}: the header has no column {', '.join(missing)}; add "
                        "it (its cells may be empty where the value is optional)")
    return {name: names.index(name) for name in COLUMNS}


# --- checking rows (writes nothing) -----------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """A row that passed every check, its values normalised as they will be stored."""

    line: int
    ref: str | None
    name: str
    phone: str | None
    email: str | None
    timezone: str | None
    locale: str | None
    channels: str | None  # None: the default for a new patient, unchanged for a known one
    visit: SessionVisit

    def patient_key(self) -> tuple[str | None, ...]:
        """Who the row is about, as far as the file alone can tell."""
        if self.ref:
            return ("ref", self.ref)
        return ("phone", self.name, self.phone) if self.phone else ("email", self.name,
                                                                      self.email)

    def value(self, column: str) -> Any:
        visit = self.visit
        return {"area": visit.area, "session_number": visit.session_number,
                "next_session_at": visit.next_session_at}.get(column, getattr(self, column, None))


class _Checker:
    """Checks one row at a time with the library's validators; remembers the file's rows."""

    def __init__(self, app: App) -> None:
        self.country = app.settings.clinic.country
        self.clinic_tz = zone(app.settings.clinic.timezone)
        self.protocols = app.protocols
        self.locales = app.renderer.locales()
        self.now = app.clock()
        self.patients: dict[tuple[str | None, ...], dict[str, tuple[Any, int]]] = {}
        self.sessions: dict[tuple[Any, ...], _Row] = {}

    def row(self, line: int, cells: dict[str, str]) -> tuple[_Row | None, list[RowProblem]]:
        problems: list[RowProblem] = []
        if "" in cells:
            return None, [RowProblem(line, "row", cells[""])]

        def attempt(column: str, check: Callable[[], Any]) -> Any:
            try:
                return check()
            except UserError as error:
                problems.append(_problem(line, error, column))
                return None

        def bad(column: str, problem: str) -> None:
            problems.append(RowProblem(line, column, problem))

        for column, limit in MAX_LENGTH.items():
            if len(cells[column]) > limit:
                bad(column, f"is {len(cells[column])} characters long; at most {limit}")
        name = cells["name"]
        if not name:
            bad("name", "is empty; every row needs the patient's name")
        phone = attempt("phone", lambda: normalize_phone(cells["phone"], self.country)) \
            if cells["phone"] else None
        email = attempt("email", lambda: normalize_email(cells["email"])) \
            if cells["email"] else None
        timezone = cells["timezone"] or None
        if timezone:
            attempt("timezone", lambda: zone(timezone))
        locale = cells["locale"] or None
        if locale and locale not in self.locales:
            bad("locale", f"'{locale}' has no message templates; use one of "
                f"{', '.join(self.locales)}")
        channels = None
        if bool(phone) == bool(cells["phone"]) and bool(email) == bool(cells["email"]):
            checked = attempt("channels",
                              lambda: parse_channels(cells["channels"] or None, phone, email))
            channels = checked if cells["channels"] else None
        visit = self._visit(cells, attempt, bad)
        if problems or visit is None:
            return None, problems
        return _Row(line=line, ref=cells["ref"] or None, name=name, phone=phone, email=email,
                    timezone=timezone, locale=locale, channels=channels, visit=visit), []

    def _visit(self, cells: dict[str, str], attempt: Callable[[str, Callable[[], Any]], Any],
               bad: Callable[[str, str], None]) -> SessionVisit | None:
        treatment = cells["treatment"]
        if not treatment:
            known = ", ".join(p.key for p in self.protocols)
            bad("treatment", f"is empty; every row needs a treatment ({known})")
        else:
            attempt("treatment", lambda: self.protocols.get(treatment))
        session_at = self._time(cells, "session_at", attempt)
        if not cells["session_at"]:
            bad("session_at", "is empty; every row needs the time of the completed session, "
                "e.g. 2026-03-02T14:30")
        elif session_at is not None and not has_taken_place(session_at, self.now):
            bad("session_at", f"'{cells['session_at']}' is in the future; the file lists "
                "completed sessions only (a booked one goes in next_session_at)")
        next_at = self._time(cells, "next_session_at", attempt)
        if next_at is not None and session_at is not None and next_at <= session_at:
            bad("next_session_at", f"'{cells['next_session_at']}' must be after session_at "
                f"('{cells['session_at']}')")
        number = None
        if cells["session_number"]:
            text = cells["session_number"]
            if not (text.isascii() and text.isdigit()):
                bad("session_number", f"'{text}' is not a whole number; write 1, 2, 3...")
            elif not 1 <= int(text) <= 500:
                bad("session_number", "must be between 1 and 500")
            else:
                number = int(text)
        if session_at is None or not treatment:
            return None
        return SessionVisit(treatment=treatment, session_at=session_at,
                            area=cells["area"] or None, session_number=number,
                            next_session_at=next_at)

    def _time(self, cells: dict[str, str], column: str,
              attempt: Callable[[str, Callable[[], Any]], Any]) -> datetime | None:
        if not cells[column]:
            return None
        moment: datetime | None = attempt(
            column, lambda: parse_time(cells[column], self.clinic_tz, column))
        return moment


def _conflicts(row: _Row, checker: _Checker, problems: list[RowProblem]) -> bool:
    """Whether `row` contradicts an earlier row of the file about the same patient or session.

    Both rows could not be true; importing them would make each import undo the other's
    change, so the later row is reported.
    """
    key = row.patient_key()
    known = checker.patients.setdefault(key, {})
    for column in PATIENT_COLUMNS:
        value = getattr(row, column)
        if value is None:
            continue
        if column in known and known[column][0] != value:
            before, line = known[column]
            problems.append(RowProblem(row.line, column, f"'{value}' contradicts line {line} "
                                       f"('{before}') for the same patient; give one value"))
            return True
    for column in PATIENT_COLUMNS:
        if getattr(row, column) is not None:
            known.setdefault(column, (getattr(row, column), row.line))
    session_key = (*key, row.visit.treatment, row.visit.session_at)
    earlier = checker.sessions.setdefault(session_key, row)
    for column in SESSION_COLUMNS:
        if earlier is not row and earlier.value(column) != row.value(column):
            problems.append(RowProblem(row.line, column, f"differs from line {earlier.line}, "
                                       "the same session of the same patient; keep one row"))
            return True
    return False


def _problem(line: int, error: UserError, column: str) -> RowProblem:
    """The library's UserError as a problem of this row, in the file's column names."""
    name = error.field.replace("-", "_")
    if name not in COLUMNS:
        name = column

    def option_to_column(match: re.Match[str]) -> str:
        text = match.group(1).replace("-", "_")
        return text if text in COLUMNS else match.group(0)

    return RowProblem(line, name, re.sub(r"--([a-z]+(?:-[a-z]+)*)", option_to_column,
                                         error.problem))


# --- applying rows ----------------------------------------------------------------------


@dataclass
class _Outcome:
    patient_id: int
    added: bool = False
    updated: bool = False
    planned: int = 0
    changed: bool = False


def _apply(app: App, rows: list[_Row], report: ImportReport, *, skip_invalid: bool,
           dry_run: bool, on_row: OnRow | None, actor: str | None) -> None:
    """Apply every row, each in its own savepoint; all in one transaction unless skipping.

    Without `skip_invalid` a row that fails here (the database disagrees) rolls the whole
    file back; with it, that row alone is rolled back and the others are committed one by one.
    A `dry_run` keeps the failing rows out, as skipping does, then rolls everything back.
    """
    planner = app.planner()
    locales = app.renderer.locales()
    # Per patient id: what a row of this file said about each detail, and on which line.
    said: dict[int, dict[str, tuple[Any, int]]] = {}
    added: set[int] = set()
    updated: set[int] = set()
    done = 0
    with app.engine.connect() as conn:
        whole = None if skip_invalid and not dry_run else conn.begin()
        for row in rows:
            transaction = conn.begin() if whole is None else conn.begin_nested()
            try:
                outcome = _apply_row(conn, app, planner, locales, row, said, actor)
            except UserError as error:
                transaction.rollback()
                report.problems.append(_problem(row.line, error, "ref" if row.ref else "name"))
            else:
                transaction.commit()
                _remember(said, outcome.patient_id, row)
                if outcome.added:
                    added.add(outcome.patient_id)
                elif outcome.updated:
                    updated.add(outcome.patient_id)
                report.messages_planned += outcome.planned
                if outcome.changed:
                    report.imported += 1
                else:
                    report.unchanged += 1
            done += 1
            if on_row is not None:
                on_row(done, len(rows))
        if dry_run:
            assert whole is not None
            whole.rollback()
        elif whole is not None:
            if report.problems:
                whole.rollback()
                report.imported = report.unchanged = report.messages_planned = 0
                return
            whole.commit()
    report.patients_added = len(added)
    report.patients_updated = len(updated - added)


def _apply_row(conn: Connection, app: App, planner: Planner, locales: tuple[str, ...],
               row: _Row, said: dict[int, dict[str, tuple[Any, int]]],
               actor: str | None) -> _Outcome:
    # A session of its own per row: a row rolled back leaves nothing stale behind. Its
    # `info` names who the history records, as `App.db` does.
    with DbSession(bind=conn, join_transaction_mode="create_savepoint",
                   expire_on_commit=False, info={"actor": actor} if actor else None) as db:
        changed = _watch(db)
        patient = _match(db, row)
        if patient is None:
            patient = add_patient(
                db, NewPatient(name=row.name, phone=row.phone, email=row.email,
                               timezone=row.timezone, locale=row.locale,
                               channels=row.channels, ref=row.ref),
                country=app.settings.clinic.country,
                default_timezone=app.settings.clinic.timezone,
                default_locale=app.settings.messaging.default_locale, locales=locales,
                clock=app.clock)
            assert patient.id is not None
            outcome = _Outcome(patient.id, added=True)
        else:
            assert patient.id is not None
            _check_agrees(row, said.get(patient.id, {}))
            outcome = _Outcome(patient.id)
            fields, plan = update_patient(
                db, planner, patient, PatientChanges(
                    name=row.name if row.ref else None, phone=row.phone, email=row.email,
                    timezone=row.timezone, locale=row.locale, channels=row.channels,
                    ref=row.ref if row.ref and patient.ref is None else None),
                country=app.settings.clinic.country, locales=locales)
            outcome.updated, outcome.planned = bool(fields), len(plan.created)
        enrollment = enroll(db, planner, patient, row.visit)
        outcome.planned += enrollment.created
        outcome.changed = changed()
        db.commit()  # releases this row's savepoint; the file's transaction decides
        return outcome


def _match(db: DbSession, row: _Row) -> Patient | None:
    """The patient the row is about: by ref; else by name and phone, else name and email.

    A ref the database does not know yet may belong to a patient added by hand without
    one (same name and phone or email): that patient is taken and given the ref.
    """
    if row.ref:
        found = db.exec(select(Patient).where(Patient.ref == row.ref)).first()
        if found is not None:
            return found
    for column, value in (("phone", row.phone), ("email", row.email)):
        if value is None:
            continue
        query = select(Patient).where(Patient.name == row.name,
                                      getattr(Patient, column) == value,
                                      col(Patient.forgotten_at).is_(None))
        if row.ref:
            query = query.where(col(Patient.ref).is_(None))
        found = db.exec(query.order_by(col(Patient.id))).first()
        if found is not None:
            return found
    return None


def _check_agrees(row: _Row, said: dict[str, tuple[Any, int]]) -> None:
    """Two rows of one file that match the same patient must not disagree (see _conflicts)."""
    for column in PATIENT_COLUMNS:
        value = getattr(row, column)
        if value is not None and column in said and said[column][0] != value:
            before, line = said[column]
            raise UserError(column, f"'{value}' contradicts line {line} ('{before}') for the "
                            "same patient; give one value")


def _remember(said: dict[int, dict[str, tuple[Any, int]]], patient_id: int, row: _Row) -> None:
    known = said.setdefault(patient_id, {})
    for column in PATIENT_COLUMNS:
        if getattr(row, column) is not None:
            known.setdefault(column, (getattr(row, column), row.line))


def _watch(db: DbSession) -> Callable[[], bool]:
    """A function saying whether anything was written through `db` since this call."""
    writes: list[bool] = []

    def before_flush(session: DbSession, _context: object, _instances: object) -> None:
        if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
            writes.append(True)

    event.listen(db, "before_flush", before_flush)
    return lambda: bool(writes)
