"""Enrollment: a completed session becomes a course entry and a plan of message rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

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

# A session "in the future" by less than this is clock skew between the clinic's systems.
FUTURE_TOLERANCE = timedelta(minutes=15)


def has_taken_place(at: datetime, now: datetime) -> bool:
    """Whether a session at `at` can have happened by `now` (allowing for clock skew)."""
    return at <= now + FUTURE_TOLERANCE


def move_session(db: DbSession, session: Session, at: datetime, now: datetime,
                 why: str = "") -> None:
    """Move a session to `at`: its reminders of the new time are new messages (`moves`)."""
    record(db, now, "session.rescheduled", _patient_of(db, session),
           f"{session.at.isoformat()} -> {at.isoformat()}" + (f" ({why})" if why else ""),
           course_id=session.course_id, session_id=session.id)
    session.at, session.moves = at, session.moves + 1
    db.add(session)
    db.flush()


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
    now = planner.clock()
    require_not_forgotten(patient)
    protocol = planner.protocols.get(visit.treatment)
    _check_visit(visit, now)
    if course is None:
        course = _course_for(db, patient, protocol, visit, now)
    before = _booked_at(db, course)
    session = _completed_session(db, course, visit, now)
    next_session = _booked_session(db, course, session, visit.next_session_at, now)
    renumber(db, course)
    reason = f"session {session.number} completed"
    if next_session is not None and before.get(next_session.id) != next_session.at:
        reason += f"; session {next_session.number} booked"
    changes = replan(db, planner, course, reason)
    anchors = [s.id for s in (session, next_session) if s is not None]
    messages = list(db.exec(select(Message).where(
        col(Message.session_id).in_(anchors), Message.status != MessageStatus.CANCELLED)
        .order_by(col(Message.send_after), col(Message.id))).all())
    return Enrollment(course=course, session=session, next_session=next_session,
                      messages=messages, changes=changes)


def _booked_at(db: DbSession, course: Course) -> dict[int | None, datetime]:
    return {s.id: s.at for s in sessions_of(db, course) if s.status == SessionStatus.BOOKED}


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
    open_ = [c for c in courses_of(db, patient.id)
             if c.treatment == treatment and c.status != CourseStatus.WITHDRAWN]
    return open_[-1] if open_ else None


def new_course(db: DbSession, patient: Patient, protocol: Protocol, now: datetime, *,
               area: str | None = None, sessions_planned: int | None = None,
               spacing_days: int | None = None) -> Course:
    """Start a course with the protocol's defaults unless staff gave their own."""
    assert patient.id is not None  # callers pass a stored patient
    course = Course(patient_id=patient.id, treatment=protocol.key, area=area or "",
                    sessions_planned=sessions_planned or protocol.sessions,
                    spacing_days=spacing_days or protocol.spacing_days[0], created_at=now)
    db.add(course)
    db.flush()
    record(db, now, "course.started", patient.id, f"{protocol.key}, "
           f"{course.sessions_planned} session(s) {course.spacing_days} days apart",
           course_id=course.id)
    return course


def _course_for(
    db: DbSession, patient: Patient, protocol: Protocol, visit: SessionVisit, now: datetime
) -> Course:
    course = open_course(db, patient, protocol.key)
    if course is None:
        return new_course(db, patient, protocol, now, area=visit.area,
                          sessions_planned=visit.sessions_planned,
                          spacing_days=visit.spacing_days)
    if visit.sessions_planned is not None:
        course.sessions_planned = visit.sessions_planned
    if visit.spacing_days is not None:
        course.spacing_days = visit.spacing_days
    if visit.area:
        course.area = visit.area
    db.add(course)
    db.flush()
    return course


def _completed_session(db: DbSession, course: Course, visit: SessionVisit, now: datetime) -> Session:
    session = session_at(db, course, visit.session_at)
    if session is not None and session.status == SessionStatus.CANCELLED:
        raise UserError("session-at", f"session {session.id} at that time was cancelled; "
                        "enroll with the time the patient actually came")
    if session is None:
        # A booking whose time has passed is this visit, moved (the patient came another
        # day); otherwise the visit is new. `renumber` gives it its place in the course.
        passed = [s for s in sessions_of(db, course)
                  if s.status == SessionStatus.BOOKED and s.at < visit.session_at]
        session = passed[-1] if passed else None
        if session is not None:
            move_session(db, session, visit.session_at, now, "came then")
        else:
            assert course.id is not None  # a stored course: loaded, or flushed when new
            session = Session(course_id=course.id, number=0, at=visit.session_at,
                              created_at=now)
    if visit.session_number is not None:
        session.number, session.number_fixed = visit.session_number, True
    if session.status != SessionStatus.COMPLETED:
        session.status = SessionStatus.COMPLETED
        db.add(session)
        db.flush()
        renumber(db, course)
        record(db, now, "session.completed", course.patient_id, f"session {session.number}",
               course_id=course.id, session_id=session.id)
    return session


def _booked_session(
    db: DbSession, course: Course, done: Session, at: datetime | None, now: datetime
) -> Session | None:
    if at is None:
        return None
    session = session_at(db, course, at)
    if session is not None and session.status != SessionStatus.COMPLETED:
        if session.status != SessionStatus.BOOKED:
            session.status = SessionStatus.BOOKED
            record(db, now, "session.booked", course.patient_id, "booked again",
                   course_id=course.id, session_id=session.id)
        db.add(session)
        db.flush()
        return session
    if session is not None:
        return session
    # The clinic's system says the next visit is at `at`: an earlier booking after this
    # session is that visit, moved.
    moved = next((s for s in sessions_of(db, course)
                  if s.status == SessionStatus.BOOKED and s.at > done.at), None)
    if moved is not None:
        move_session(db, moved, at, now, "enrollment")
        return moved
    assert course.id is not None  # a stored course: loaded, or flushed when new
    session = Session(course_id=course.id, number=done.number + 1, at=at,
                      status=SessionStatus.BOOKED, created_at=now)
    db.add(session)
    db.flush()
    record(db, now, "session.booked", course.patient_id, "at enrollment", course_id=course.id,
           session_id=session.id)
    return session


def session_at(db: DbSession, course: Course, at: datetime) -> Session | None:
    """The course's session at exactly `at`, whatever its status."""
    return next((s for s in sessions_of(db, course) if s.at == at), None)


def renumber(db: DbSession, course: Course) -> None:
    """Sessions are numbered in time order; a number staff gave is kept and counted on from."""
    previous = 0
    for session in sessions_of(db, course):
        if session.status not in LIVE_SESSIONS:
            continue
        if not session.number_fixed and session.number != previous + 1:
            session.number = previous + 1
            db.add(session)
        previous = session.number
    db.flush()


def _patient_of(db: DbSession, session: Session) -> int:
    course = db.get(Course, session.course_id)
    assert course is not None
    return course.patient_id
