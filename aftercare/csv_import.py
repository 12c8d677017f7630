"""Import: a day's completed sessions from the clinic's system (CSV), enrolled in one go.

Two passes. The first reads and checks every row with the library's own validators and
writes nothing; the second matches each good row to a patient (adding or updating them)
and enrolls the session, in session order, CHUNK_ROWS rows at a time: a chunk's patients,
courses, sessions and messages are read in a few queries, its rows planned in memory by
the one enrollment and planning rule (`enroll_in`, `replan_loaded`) and written with one
insert per table. By default the file is all or nothing: any bad row and nothing is
written. Enrolling is idempotent, so importing a file again changes nothing. The format
is described in docs/import.md.
"""

from __future__ import annotations

import csv
import gc
import io
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, event, insert, or_, text
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Session as DbSession
from sqlmodel import SQLModel, col, select

from aftercare.app import App
from aftercare.clock import parse_time, zone
from aftercare.db import require_schema
from aftercare.enrollment import NewRow, SessionVisit, enroll, enroll_in, has_taken_place
from aftercare.errors import UserError
from aftercare.history import actor_of
from aftercare.models import Course, Event, Message, MessageStatus, Patient, Session
from aftercare.patients import (
    NewPatient,
    PatientChanges,
    add_patient,
    normalize_email,
    normalize_phone,
    parse_channels,
    update_patient,
)
from aftercare.planning import CHANGEABLE, PlanChanges, Planner, plan_events, replan_loaded

COLUMNS = ("ref", "name", "phone", "email", "timezone", "locale", "channels", "treatment",
           "area", "session_at", "session_number", "next_session_at")
# What a patient is, as far as two rows of one file can disagree about it.
PATIENT_COLUMNS = ("name", "phone", "email", "timezone", "locale", "channels")
SESSION_COLUMNS = ("area", "session_number", "next_session_at")
# The database's column sizes, for the free-text cells nothing else checks.
MAX_LENGTH = {"ref": 64, "name": 200, "area": 100}

OnRow = Callable[[int, int], None]
Built = TypeVar("Built", bound=SQLModel)
# Rows planned in memory and written together (one transaction each with --skip-invalid).
CHUNK_ROWS = 500


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
    """Apply every row, CHUNK_ROWS at a time; all in one transaction unless skipping.

    Each chunk is planned in memory (`_Bulk`) and written in bulk. Without `skip_invalid`
    a row that fails here (the database disagrees) rolls the whole file back; with it,
    that row alone is rolled back and each chunk is committed on its own. A `dry_run`
    keeps the failing rows out, as skipping does, then rolls everything back.
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
        for start in range(0, len(rows), max(CHUNK_ROWS, 1)):
            chunk = rows[start:start + max(CHUNK_ROWS, 1)]
            transaction = conn.begin() if whole is None else None
            with _collector_paused():
                results = _apply_chunk(conn, app, planner, locales, chunk, said, actor)
            if transaction is not None:
                transaction.commit()
            for row, result in results:
                if isinstance(result, UserError):
                    report.problems.append(_problem(row.line, result,
                                                    "ref" if row.ref else "name"))
                else:
                    if result.added:
                        added.add(result.patient_id)
                    elif result.updated:
                        updated.add(result.patient_id)
                    report.messages_planned += result.planned
                    if result.changed:
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


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a chunk is planned: its tens of thousands of new
    objects would trigger full collections that find nothing (a sixth of an import's time);
    what the chunk leaves is collected afterwards as usual."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _apply_chunk(conn: Connection, app: App, planner: Planner, locales: tuple[str, ...],
                 chunk: list[_Row], said: dict[int, dict[str, tuple[Any, int]]],
                 actor: str | None) -> list[tuple[_Row, _Outcome | UserError]]:
    """Plan the chunk's rows in memory and write them in bulk; a row the bulk path cannot
    take (a patient's details change, the database refuses it) goes through `_apply_row`
    alone, after the rows before it are written, so each sees what the others did."""
    results: list[tuple[_Row, _Outcome | UserError]] = []
    first = 0
    # Rows planned together: the chunk, fewer after a row that needed the per-row path
    # (the next ones are read again; a file of many such rows stays linear).
    span = len(chunk)
    while first < len(chunk):
        end = min(first + span, len(chunk))
        bulk = _Bulk(conn, app, planner, locales, chunk[first:end], actor)
        planned: list[tuple[_Row, _Outcome | UserError]] = []
        stop = end
        for index in range(first, end):
            try:
                planned.append((chunk[index], bulk.apply(chunk[index], said)))
            except (UserError, _NotInBulk):
                stop = index
                break
        if stop == end:
            bulk.write()
            results.extend(planned)
            first, span = end, span * 4
            continue
        # Plan again the rows before the one that could not be planned here (nothing of
        # theirs was written), write them, then take that row alone.
        bulk.discard(said)
        if stop > first:
            bulk = _Bulk(conn, app, planner, locales, chunk[first:stop], actor)
            planned = [(row, bulk.apply(row, said)) for row in chunk[first:stop]]
            bulk.write()
            results.extend(planned)
        row = chunk[stop]
        savepoint = conn.begin_nested()
        try:
            outcome = _apply_row(conn, app, planner, locales, row, said, actor)
        except UserError as error:
            savepoint.rollback()
            results.append((row, error))
        else:
            savepoint.commit()
            _remember(said, outcome.patient_id, row)
            results.append((row, outcome))
        first, span = stop + 1, 16
    return results


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


# --- applying a chunk in bulk -----------------------------------------------------------


class _NotInBulk(Exception):
    """The row needs the per-row path (`_apply_row`): it changes a patient's details."""


class _Ids:
    """Ids for new rows, known before they are written (messages and events name them)."""

    BLOCK = 1000

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.taken: dict[str, int] = {}
        self.spare: dict[str, list[int]] = {}

    def take(self, table: str) -> int:
        if self.sqlite:
            # The chunk's transaction began IMMEDIATE: nobody else writes until it ends.
            if table not in self.taken:
                self.taken[table] = self.conn.execute(
                    text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
            self.taken[table] += 1
            return self.taken[table]
        spare = self.spare.setdefault(table, [])
        if not spare:  # from the table's own sequence, a block at a time
            spare.extend(reversed(self.conn.execute(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                     "FROM generate_series(1, :n)"), {"table": table, "n": self.BLOCK})
                .scalars().all()))
        return int(spare.pop())


_MAKERS: dict[type[SQLModel], tuple[Any, dict[str, Any]]] = {}


def _construct(model: type[Built], values: dict[str, Any]) -> Built:
    """A new, unsaved row of `model` with its fields' defaults, built without SQLModel's
    validating __init__ (twenty times dearer: most of an import's time otherwise). The
    values come from the same code as always; the row is only read and written in bulk."""
    maker = _MAKERS.get(model)
    if maker is None:
        maker = _MAKERS[model] = (sa_inspect(model).class_manager, {
            name: info.get_default(call_default_factory=True)
            for name, info in model.model_fields.items() if not info.is_required()})
    manager, defaults = maker
    row: Built = manager.new_instance()
    row.__dict__.update(defaults)
    row.__dict__.update(values)
    for name, value in (("__pydantic_fields_set__", set(values)), ("__pydantic_extra__", None),
                        ("__pydantic_private__", None)):
        object.__setattr__(row, name, value)
    return row


class _Bulk:
    """A chunk's rows planned in memory by the one enrollment and planning rule
    (`enroll_in` on this `Book`, `replan_loaded`), then written in a few statements.

    Reads, once, every patient the rows may be about with their courses, sessions and
    messages; new rows get their ids here; `write` inserts them in bulk and lets the ORM
    update the few loaded rows that changed.
    """

    def __init__(self, conn: Connection, app: App, planner: Planner,
                 locales: tuple[str, ...], rows: list[_Row], actor: str | None) -> None:
        self.app, self.planner, self.locales = app, planner, locales
        self.now = planner.clock()
        self.db = DbSession(bind=conn, join_transaction_mode="create_savepoint",
                            expire_on_commit=False, autoflush=False,
                            info={"actor": actor} if actor else None)
        self.actor = actor_of(self.db)
        self.ids = _Ids(conn)
        self.new: dict[type[SQLModel], list[SQLModel]] = {
            Patient: [], Course: [], Session: [], Message: []}
        self.events: list[dict[str, Any]] = []
        # What `said` held for each patient before this chunk's rows (None: nothing).
        self.said_before: dict[int, dict[str, tuple[Any, int]] | None] = {}
        self.patients: dict[int, Patient] = {}
        self.by_ref: dict[str, Patient] = {}
        self.by_contact: dict[tuple[str, str, str], list[Patient]] = {}
        self.courses: dict[int, list[Course]] = {}
        self.course_by_id: dict[int, Course] = {}
        self.sessions: dict[int, list[Session]] = {}
        self.messages: dict[int, list[Message]] = {}
        self.session_course: dict[int, int] = {}
        self._load(rows)

    def _load(self, rows: list[_Row]) -> None:
        refs = {r.ref for r in rows if r.ref}
        phones = {r.phone for r in rows if r.phone}
        emails = {r.email for r in rows if r.email}
        for patient in self.db.exec(select(Patient).where(or_(
                col(Patient.ref).in_(refs), col(Patient.phone).in_(phones),
                col(Patient.email).in_(emails))).order_by(col(Patient.id))).all():
            self._know_patient(patient)
        courses = list(self.db.exec(select(Course).where(
            col(Course.patient_id).in_(list(self.patients))).order_by(col(Course.id))).all())
        for course in courses:
            self._know_course(course)
        course_ids = [c.id for c in courses]
        for session in self.db.exec(select(Session).where(
                col(Session.course_id).in_(course_ids)).order_by(col(Session.id))).all():
            self._know_session(session)
        if self.db.get_bind().dialect.name != "sqlite":
            # What `replan` locks, taken in id order for the whole chunk (see replan).
            self.db.exec(select(Message).where(col(Message.course_id).in_(course_ids),
                                               col(Message.status).in_(CHANGEABLE))
                         .order_by(col(Message.id)).with_for_update()).all()
        for message in self.db.exec(select(Message).where(
                col(Message.course_id).in_(course_ids)).order_by(col(Message.id))).all():
            self.messages[message.course_id].append(message)

    def _know_patient(self, patient: Patient) -> None:
        assert patient.id is not None
        self.patients[patient.id] = patient
        if patient.ref:
            self.by_ref.setdefault(patient.ref, patient)
        for column in ("phone", "email"):
            value = getattr(patient, column)
            if value:
                self.by_contact.setdefault((column, patient.name, value), []).append(patient)

    def _know_course(self, course: Course) -> None:
        assert course.id is not None
        self.courses.setdefault(course.patient_id, []).append(course)
        self.course_by_id[course.id] = course
        self.sessions[course.id] = []
        self.messages[course.id] = []

    def _know_session(self, session: Session) -> None:
        assert session.id is not None
        self.sessions[session.course_id].append(session)
        self.session_course[session.id] = session.course_id

    # Book: what enrollment reads and writes.

    def courses_of(self, patient_id: int | None) -> list[Course]:
        return list(self.courses.get(patient_id or 0, []))

    def sessions_of(self, course: Course) -> list[Session]:
        return sorted(self.sessions[course.id or 0], key=lambda s: (s.at, s.id or 0))

    def course(self, course_id: int) -> Course:
        return self.course_by_id[course_id]

    def build(self, model: type[NewRow], **values: Any) -> NewRow:
        return _construct(model, values)

    def save(self, row: Course | Session) -> None:
        if row.id is not None:
            return  # loaded (the ORM tracks its changes) or new (written as it ends up)
        if isinstance(row, Course):
            row.id = self.ids.take("course")
            self._know_course(row)
        else:
            row.id = self.ids.take("session")
            self._know_session(row)
        self.new[type(row)].append(row)

    def record(self, at: datetime, kind: str, patient_id: int | None, detail: str = "", *,
               course_id: int | None = None, session_id: int | None = None,
               message_id: int | None = None) -> None:
        # The event history.record adds, as the values written with the chunk.
        assert patient_id is not None
        self.events.append({"at": at, "patient_id": patient_id, "course_id": course_id,
                            "session_id": session_id, "message_id": message_id, "kind": kind,
                            "detail": detail[:500], "actor": self.actor})

    def replan(self, planner: Planner, course: Course, reason: str) -> PlanChanges:
        assert course.id is not None
        changes = replan_loaded(planner, course, self.patients[course.patient_id],
                                self.sessions_of(course), self.messages[course.id], reason,
                                lambda **values: _construct(
                                    Message, {**values, "id": self.ids.take("message")}))
        for message in changes.created:
            self.messages[course.id].append(message)
            self.new[Message].append(message)
        now = planner.clock()
        for kind, detail, session_id, message_id in plan_events(course, changes, reason):
            self.record(now, kind, course.patient_id, detail, course_id=course.id,
                        session_id=session_id, message_id=message_id)
        return changes

    def messages_of(self, session_ids: list[int | None]) -> list[Message]:
        wanted = {i for i in session_ids if i is not None}
        courses = {self.session_course[i] for i in wanted}
        return sorted((m for c in courses for m in self.messages[c]
                       if m.session_id in wanted and m.status != MessageStatus.CANCELLED),
                      key=lambda m: (m.send_after, m.id or 0))

    # The import's own steps.

    def match(self, row: _Row) -> Patient | None:
        """`_match` on the rows read and added: the same order of keys."""
        if row.ref and row.ref in self.by_ref:
            return self.by_ref[row.ref]
        for column, value in (("phone", row.phone), ("email", row.email)):
            if value is None:
                continue
            found = [p for p in self.by_contact.get((column, row.name, value), [])
                     if p.forgotten_at is None and not (row.ref and p.ref is not None)]
            if found:
                return min(found, key=lambda p: p.id or 0)
        return None

    def add_patient(self, row: _Row) -> Patient:
        """`add_patient` on a row the check pass validated with the same validators."""
        settings = self.app.settings
        locale = row.locale or settings.messaging.default_locale
        if locale not in self.locales:
            raise _NotInBulk  # add_patient says why, in its words
        timezone = row.timezone or settings.clinic.timezone
        zone(timezone)
        patient = _construct(Patient, {
            "name": row.name, "phone": row.phone, "email": row.email, "timezone": timezone,
            "locale": locale, "channels": parse_channels(row.channels, row.phone, row.email),
            "ref": row.ref, "created_at": self.app.clock()})
        patient.id = self.ids.take("patient")
        self._know_patient(patient)
        self.new[Patient].append(patient)
        return patient

    def apply(self, row: _Row, said: dict[int, dict[str, tuple[Any, int]]]) -> _Outcome:
        """`_apply_row` in memory, for a row that adds a patient or changes none."""
        written = sum(len(rows) for rows in self.new.values()) + len(self.events)
        patient = self.match(row)
        kept: list[tuple[SQLModel, dict[str, Any]]] = []
        if patient is None:
            patient = self.add_patient(row)
            assert patient.id is not None
            outcome = _Outcome(patient.id, added=True)
        else:
            assert patient.id is not None
            _check_agrees(row, said.get(patient.id, {}))
            if _changes_patient(row, patient):
                raise _NotInBulk
            outcome = _Outcome(patient.id)
            kept = [(r, dict(r.__dict__)) for r in self._rows_of(patient)]
        enrollment = enroll_in(self, self.planner, patient, row.visit)
        outcome.planned = enrollment.created
        outcome.changed = outcome.added or \
            sum(len(rows) for rows in self.new.values()) + len(self.events) > written or \
            any(r.__dict__ != before for r, before in kept)
        if patient.id not in self.said_before:
            known = said.get(patient.id)
            self.said_before[patient.id] = None if known is None else dict(known)
        _remember(said, patient.id, row)
        return outcome

    def _rows_of(self, patient: Patient) -> list[SQLModel]:
        rows: list[SQLModel] = [patient]
        for course in self.courses.get(patient.id or 0, []):
            rows.append(course)
            rows.extend(self.sessions[course.id or 0])
            rows.extend(self.messages[course.id or 0])
        return rows

    def write(self) -> None:
        """Insert the new rows, a statement per table, and update the changed ones."""
        conn = self.db.connection()
        for model, rows in self.new.items():
            if rows:
                # Built by _construct: every field is in the row's __dict__ (read directly,
                # a tenth of the cost of the instrumented attributes).
                _insert(conn, model, [row.__dict__ for row in rows])
        if self.events:
            _insert(conn, Event, self.events)
        self.db.flush()
        self.db.commit()  # releases this chunk's savepoint; the caller's transaction decides
        self.db.close()

    def discard(self, said: dict[int, dict[str, tuple[Any, int]]]) -> None:
        """Forget the rows planned (nothing was written), and what they said."""
        for patient_id, known in self.said_before.items():
            if known is None:
                said.pop(patient_id, None)
            else:
                said[patient_id] = known
        self.db.rollback()
        self.db.close()


def _insert(conn: Connection, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """INSERT `rows` (values by column; an event's id left to the database) in one
    executemany, each value converted by its column type's own bind processor, without
    SQLAlchemy's per-row statement machinery (most of the cost of a bulk insert)."""
    table = sa_inspect(model).local_table
    columns = [c for c in table.columns if c.key in rows[0]]
    compiled = insert(table).compile(dialect=conn.dialect,
                                     column_keys=[c.key for c in columns])
    convert = {c.key: _remembering(c.type.dialect_impl(conn.dialect).bind_processor(
        conn.dialect)) for c in columns}
    order = (compiled.positiontup or []) if compiled.positional else list(convert)
    steps = [(key, convert[key]) for key in order]
    if compiled.positional:
        conn.exec_driver_sql(str(compiled), [
            tuple(row[key] if to is None else to(row[key]) for key, to in steps)
            for row in rows])
    else:
        conn.exec_driver_sql(str(compiled), [
            {key: row[key] if to is None else to(row[key]) for key, to in steps}
            for row in rows])


def _remembering(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """`convert`, computed once per value: a chunk's rows share most of their times (every
    created_at is now), and formatting a time costs more than the rest of a value."""
    if convert is None:
        return None
    known: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        if value not in known:
            known[value] = convert(value)
        return known[value]

    return remembered


def _changes_patient(row: _Row, patient: Patient) -> bool:
    """Whether `update_patient` would change the patient for this row (see _apply_row)."""
    if row.ref and patient.ref is None:
        return True
    given = {"name": row.name if row.ref else None, "phone": row.phone, "email": row.email,
             "timezone": row.timezone, "locale": row.locale, "channels": row.channels}
    return any(value is not None and getattr(patient, name) != value
               for name, value in given.items())
