"""Enrollment: a completed session becomes a course entry and a plan of message rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from typing import Protocol as Interface

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.errors import UserError
from aftercare.history import record
from aftercare.models import (
    LIVE_SESSIONS,
    Course,
    CourseStatus,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.patients import require_not_forgotten
from aftercare.planning import PlanChanges, Planner, replan
from aftercare.protocols import Protocol
from aftercare.queries import courses_of, sessions_of

NewRow = TypeVar("NewRow", Course, Session)


class Book(Interface):
    """Where enrollment reads and writes courses and sessions: the database (`DbBook`), or
    rows a bulk import read beforehand and writes in bulk (csv_import)."""

    def courses_of(self, patient_id: int | None) -> list[Course]: ...
    def sessions_of(self, course: Course) -> list[Session]: ...
    def course(self, course_id: int) -> Course: ...
    def build(self, model: type[NewRow], **values: Any) -> NewRow:
        """A new row, not yet saved."""
    def save(self, row: Course | Session) -> None:
        """Store a new or changed row; a new row has its id afterwards."""
    def record(self, at: datetime, kind: str, patient_id: int | None, detail: str = "", *,
               course_id: int | None = None, session_id: int | None = None) -> None: ...
    def replan(self, planner: Planner, course: Course, reason: str) -> PlanChanges: ...
    def messages_of(self, session_ids: list[int | None]) -> list[Message]:
        """The sessions' messages that are not cancelled, by send_after then id."""


@dataclass
class DbBook:
    """Enrollment straight on the database, row by row (every command but the import)."""

    db: DbSession

    def courses_of(self, patient_id: int | None) -> list[Course]:
        return courses_of(self.db, patient_id)

    def sessions_of(self, course: Course) -> list[Session]:
        return sessions_of(self.db, course)

    def course(self, course_id: int) -> Course:
        course = self.db.get(Course, course_id)
        assert course is not None
        return course

    def build(self, model: type[NewRow], **values: Any) -> NewRow:
        return model(**values)

    def save(self, row: Course | Session) -> None:
        self.db.add(row)
        self.db.flush()

    def record(self, at: datetime, kind: str, patient_id: int | None, detail: str = "", *,
               course_id: int | None = None, session_id: int | None = None) -> None:
        record(self.db, at, kind, patient_id, detail, course_id=course_id,
               session_id=session_id)

    def replan(self, planner: Planner, course: Course, reason: str) -> PlanChanges:
        return replan(self.db, planner, course, reason)

    def messages_of(self, session_ids: list[int | None]) -> list[Message]:
        return list(self.db.exec(select(Message).where(
            col(Message.session_id).in_(session_ids), Message.status != MessageStatus.CANCELLED)
            .order_by(col(Message.send_after), col(Message.id))).all())


# A session "in the future" by less than this is clock skew between the clinic's systems.
FUTURE_TOLERANCE = timedelta(minutes=15)


def has_taken_place(at: datetime, now: datetime) -> bool:
    """Whether a session at `at` can have happened by `now` (allowing for clock skew)."""
    return at <= now + FUTURE_TOLERANCE


def move_session(db: DbSession, session: Session, at: datetime, now: datetime,
                 why: str = "") -> None:
    """Move a session to `at`: its reminders of the new time are new messages (`moves`)."""
    _move_session(DbBook(db), session, at, now, why)


def _move_session(book: Book, session: Session, at: datetime, now: datetime,
                  why: str = "") -> None:
    book.record(now, "session.rescheduled", book.course(session.course_id).patient_id,
                f"{session.at.isoformat()} -> {at.isoformat()}" + (f" ({why})" if why else ""),
                course_id=session.course_id, session_id=session.id)
    session.at, session.moves = at, session.moves + 1
    book.save(session)


@dataclass(frozen=True)
class SessionVisit:
    """What staff say about a session they just finished."""

    treatment: str
    session_at: datetime
    area: str | None = None
    session_number: int | None = None
    sessions_planned: int | None = None
    next_session_at: datetime | None = None
    spacing_days: int | None = None


@dataclass
class Enrollment:
    """The result of enrolling: the course, the session, and its planned messages."""

    course: Course
    session: Session
    next_session: Session | None
    messages: list[Message] = field(default_factory=list)
    changes: PlanChanges = field(default_factory=PlanChanges)

    @property
    def created(self) -> int:
        return len(self.changes.created)


def enroll(db: DbSession, planner: Planner, patient: Patient, visit: SessionVisit,
           *, course: Course | None = None) -> Enrollment:
    """Record a completed session (and the next one booked) and plan what follows.

    Enrolling the same session again changes nothing. `course` pins the course (a booked
    session being completed); otherwise the patient's open course of the treatment is used.
    """
    return enroll_in(DbBook(db), planner, patient, visit, course=course)


def enroll_in(book: Book, planner: Planner, patient: Patient, visit: SessionVisit,
              *, course: Course | None = None) -> Enrollment:
    """`enroll` through `book`: the one enrollment rule, on the database or on rows a bulk
    import read beforehand."""
    now = planner.clock()
    require_not_forgotten(patient)
    protocol = planner.protocols.get(visit.treatment)
    _check_visit(visit, now)
    if course is None:
        course = _course_for(book, patient, protocol, visit, now)
    before = _booked_at(book, course)
    session = _completed_session(book, course, visit, now)
    next_session = _booked_session(book, course, session, visit.next_session_at, now)
    _renumber(book, course)
    reason = f"session {session.number} completed"
    if next_session is not None and before.get(next_session.id) != next_session.at:
        reason += f"; session {next_session.number} booked"
    changes = book.replan(planner, course, reason)
    messages = book.messages_of([s.id for s in (session, next_session) if s is not None])
    return Enrollment(course=course, session=session, next_session=next_session,
                      messages=messages, changes=changes)


def _booked_at(book: Book, course: Course) -> dict[int | None, datetime]:
    return {s.id: s.at for s in book.sessions_of(course) if s.status == SessionStatus.BOOKED}


def _check_visit(visit: SessionVisit, now: datetime) -> None:
    if not has_taken_place(visit.session_at, now):
        raise UserError("session-at", "is in the future; enroll a patient after the session "
                        "(a booked one goes in --next-session-at)")
    if visit.next_session_at is not None and visit.next_session_at <= visit.session_at:
        raise UserError("next-session-at", "must be after --session-at")
    if visit.sessions_planned is not None and not 1 <= visit.sessions_planned <= 50:
        raise UserError("sessions-planned", "must be between 1 and 50")
    if visit.session_number is not None and not 1 <= visit.session_number <= 500:
        raise UserError("session-number", "must be between 1 and 500")
    if visit.spacing_days is not None and not 1 <= visit.spacing_days <= 365:
        raise UserError("spacing-days", "must be between 1 and 365")


def open_course(db: DbSession, patient: Patient, treatment: str) -> Course | None:
    """The patient's latest course of `treatment` that was not withdrawn, if any."""
    return _open_course(DbBook(db), patient, treatment)


def _open_course(book: Book, patient: Patient, treatment: str) -> Course | None:
    open_ = [c for c in book.courses_of(patient.id)
             if c.treatment == treatment and c.status != CourseStatus.WITHDRAWN]
    return open_[-1] if open_ else None


def new_course(db: DbSession, patient: Patient, protocol: Protocol, now: datetime, *,
               area: str | None = None, sessions_planned: int | None = None,
               spacing_days: int | None = None) -> Course:
    """Start a course with the protocol's defaults unless staff gave their own."""
    return _new_course(DbBook(db), patient, protocol, now, area=area,
                       sessions_planned=sessions_planned, spacing_days=spacing_days)


def _new_course(book: Book, patient: Patient, protocol: Protocol, now: datetime, *,
                area: str | None = None, sessions_planned: int | None = None,
                spacing_days: int | None = None) -> Course:
    assert patient.id is not None  # callers pass a stored patient
    course = book.build(Course, patient_id=patient.id, treatment=protocol.key, area=area or "",
                        sessions_planned=sessions_planned or protocol.sessions,
                        spacing_days=spacing_days or protocol.spacing_days[0], created_at=now)
    book.save(course)
    book.record(now, "course.started", patient.id, f"{protocol.key}, "
                f"{course.sessions_planned} session(s) {course.spacing_days} days apart",
                course_id=course.id)
    return course


def _course_for(
    book: Book, patient: Patient, protocol: Protocol, visit: SessionVisit, now: datetime
) -> Course:
    course = _open_course(book, patient, protocol.key)
    if course is None:
        return _new_course(book, patient, protocol, now, area=visit.area,
                           sessions_planned=visit.sessions_planned,
                           spacing_days=visit.spacing_days)
    if visit.sessions_planned is not None:
        course.sessions_planned = visit.sessions_planned
    if visit.spacing_days is not None:
        course.spacing_days = visit.spacing_days
    if visit.area:
        course.area = visit.area
    book.save(course)
    return course


def _completed_session(book: Book, course: Course, visit: SessionVisit,
                       now: datetime) -> Session:
    session = _session_at(book, course, visit.session_at)
    if session is not None and session.status == SessionStatus.CANCELLED:
        raise UserError("session-at", f"session {session.id} at that time was cancelled; "
                        "enroll with the time the patient actually came")
    if session is None:
        # A booking whose time has passed is this visit, moved (the patient came another
        # day); otherwise the visit is new. `renumber` gives it its place in the course.
        passed = [s for s in book.sessions_of(course)
                  if s.status == SessionStatus.BOOKED and s.at < visit.session_at]
        session = passed[-1] if passed else None
        if session is not None:
            _move_session(book, session, visit.session_at, now, "came then")
        else:
            assert course.id is not None  # a stored course: loaded, or flushed when new
            session = book.build(Session, course_id=course.id, number=0, at=visit.session_at,
                                 created_at=now)
    if visit.session_number is not None:
        session.number, session.number_fixed = visit.session_number, True
    if session.status != SessionStatus.COMPLETED:
        session.status = SessionStatus.COMPLETED
        book.save(session)
        _renumber(book, course)
        book.record(now, "session.completed", course.patient_id, f"session {session.number}",
                    course_id=course.id, session_id=session.id)
    return session


def _booked_session(
    book: Book, course: Course, done: Session, at: datetime | None, now: datetime
) -> Session | None:
    if at is None:
        return None
    session = _session_at(book, course, at)
    if session is not None and session.status != SessionStatus.COMPLETED:
        if session.status != SessionStatus.BOOKED:
            session.status = SessionStatus.BOOKED
            book.record(now, "session.booked", course.patient_id, "booked again",
                        course_id=course.id, session_id=session.id)
        book.save(session)
        return session
    if session is not None:
        return session
    # The clinic's system says the next visit is at `at`: an earlier booking after this
    # session is that visit, moved.
    moved = next((s for s in book.sessions_of(course)
                  if s.status == SessionStatus.BOOKED and s.at > done.at), None)
    if moved is not None:
        _move_session(book, moved, at, now, "enrollment")
        return moved
    assert course.id is not None  # a stored course: loaded, or flushed when new
    session = book.build(Session, course_id=course.id, number=done.number + 1, at=at,
                         status=SessionStatus.BOOKED, created_at=now)
    book.save(session)
    book.record(now, "session.booked", course.patient_id, "at enrollment", course_id=course.id,
                session_id=session.id)
    return session


def session_at(db: DbSession, course: Course, at: datetime) -> Session | None:
    """The course's session at exactly `at`, whatever its status."""
    return _session_at(DbBook(db), course, at)


def _session_at(book: Book, course: Course, at: datetime) -> Session | None:
    return next((s for s in book.sessions_of(course) if s.at == at), None)


def renumber(db: DbSession, course: Course) -> None:
    """Sessions are numbered in time order; a number staff gave is kept and counted on from."""
    _renumber(DbBook(db), course)


def _renumber(book: Book, course: Course) -> None:
    previous = 0
    for session in book.sessions_of(course):
        if session.status not in LIVE_SESSIONS:
            continue
        if not session.number_fixed and session.number != previous + 1:
            session.number = previous + 1
            book.save(session)
        previous = session.number
