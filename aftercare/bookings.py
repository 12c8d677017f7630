"""Bookings: staff book, move, cancel, complete or mark missed a patient's sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session as DbSession

from aftercare.enrollment import (
    SessionVisit,
    enroll,
    has_taken_place,
    move_session,
    new_course,
    open_course,
    renumber,
    session_at,
)
from aftercare.errors import UserError
from aftercare.history import record
from aftercare.models import Course, CourseStatus, Patient, Session, SessionStatus
from aftercare.patients import require_not_forgotten
from aftercare.planning import PlanChanges, Planner, replan
from aftercare.queries import courses_of, get_by_id


@dataclass
class Booking:
    """A session after a change, and what the change did to its course's messages."""

    session: Session
    course: Course
    changes: PlanChanges


def find_session(db: DbSession, ident: int) -> Session:
    """The session with id `ident`, or a UserError."""
    session = get_by_id(db, Session, ident)
    if session is None:
        raise UserError("session", f"no session with id {ident}; see `aftercare timeline "
                        "PATIENT` for a patient's sessions")
    return session


def find_course(db: DbSession, ident: int) -> Course:
    """The course with id `ident`, or a UserError."""
    course = get_by_id(db, Course, ident)
    if course is None:
        raise UserError("course", f"no course with id {ident}; see `aftercare patient show "
                        "PATIENT` for a patient's courses")
    return course


def book(db: DbSession, planner: Planner, patient: Patient, at: datetime, *,
         course_id: int | None = None, treatment: str | None = None) -> Booking:
    """Book a session; its reminders replace any pending rebooking or maintenance nudge."""
    now = planner.clock()
    require_not_forgotten(patient)
    if at <= now:
        raise UserError("at", "is in the past; record a session that took place with "
                        "`aftercare enroll`")
    course = _course_to_book(db, planner, patient, course_id, treatment, now)
    session = session_at(db, course, at)
    if session is not None and session.status == SessionStatus.COMPLETED:
        raise UserError("at", f"session {session.id} at that time is already completed")
    if session is None:
        assert course.id is not None  # a stored course: loaded, or flushed when new
        session = Session(course_id=course.id, number=0, at=at, status=SessionStatus.BOOKED,
                          created_at=now)
    elif session.status == SessionStatus.BOOKED:
        return Booking(session, course, PlanChanges())  # already booked: nothing to do
    session.status = SessionStatus.BOOKED
    db.add(session)
    db.flush()
    renumber(db, course)
    record(db, now, "session.booked", patient.id, f"session {session.number}",
           course_id=course.id, session_id=session.id)
    changes = replan(db, planner, course, f"session {session.number} booked")
    return Booking(session, course, changes)


def _course_to_book(db: DbSession, planner: Planner, patient: Patient, course_id: int | None,
                    treatment: str | None, now: datetime) -> Course:
    if course_id is not None:
        course = find_course(db, course_id)
        if course.patient_id != patient.id:
            raise UserError("course", f"course {course_id} is not patient {patient.id}'s")
        if treatment is not None and treatment != course.treatment:
            raise UserError("treatment", f"course {course_id} is {course.treatment}, not "
                            f"{treatment}; give one of --course and --treatment")
        if course.status == CourseStatus.WITHDRAWN:
            raise UserError("course", f"course {course_id} was withdrawn; book without "
                            "--course to start a new one (give --treatment)")
        return course
    if treatment is not None:
        protocol = planner.protocols.get(treatment)
        return open_course(db, patient, treatment) or new_course(db, patient, protocol, now)
    courses = [c for c in courses_of(db, patient.id) if c.status != CourseStatus.WITHDRAWN]
    if len(courses) == 1:
        return courses[0]
    if not courses:
        raise UserError("treatment", f"patient {patient.id} has no course yet; give "
                        "--treatment to start one")
    ids = ", ".join(str(c.id) for c in courses)
    raise UserError("course", f"patient {patient.id} has several courses ({ids}); give --course")


def reschedule(db: DbSession, planner: Planner, session: Session, at: datetime) -> Booking:
    """Move a booked session; its pending reminders move with it."""
    now = planner.clock()
    course = _booked_only(db, session, "reschedule")
    if at <= now:
        raise UserError("at", "is in the past; a session that took place is recorded with "
                        "`aftercare session complete` or `aftercare enroll`")
    if at == session.at:
        return Booking(session, course, PlanChanges())
    clash = session_at(db, course, at)
    if clash is not None:
        raise UserError("at", f"session {clash.id} of this course is already at that time")
    move_session(db, session, at, now)
    renumber(db, course)
    changes = replan(db, planner, course, f"session {session.number} rescheduled")
    return Booking(session, course, changes)


def cancel(db: DbSession, planner: Planner, session: Session, reason: str | None = None, *,
           no_show: bool = False) -> Booking:
    """Cancel a booked session (or record that the patient did not come).

    Its reminders are cancelled; with no other session booked, a rebooking nudge is planned.
    """
    now = planner.clock()
    course = _booked_only(db, session, "mark as missed" if no_show else "cancel")
    if no_show and not has_taken_place(session.at, now):
        raise UserError("session", f"session {session.id} has not started yet; cancel it "
                        "instead")
    what = "missed" if no_show else "cancelled"
    session.status = SessionStatus.NO_SHOW if no_show else SessionStatus.CANCELLED
    db.add(session)
    db.flush()
    record(db, now, f"session.{'no_show' if no_show else 'cancelled'}", course.patient_id,
           f"session {session.number}" + (f": {reason}" if reason else ""),
           course_id=course.id, session_id=session.id)
    changes = replan(db, planner, course, f"session {session.number} {what}")
    renumber(db, course)
    return Booking(session, course, changes)


def complete(db: DbSession, planner: Planner, session: Session) -> Booking:
    """The booked session took place: plan its aftercare, as `enroll` does."""
    course = db.get(Course, session.course_id)
    assert course is not None
    if session.status in (SessionStatus.CANCELLED, SessionStatus.NO_SHOW):
        raise UserError("session", f"session {session.id} was {session.status.replace('_', '-')}"
                        "; enroll the visit that took place with `aftercare enroll`")
    if not has_taken_place(session.at, planner.clock()):
        raise UserError("session", f"session {session.id} is booked for "
                        f"{session.at.isoformat()}; complete it once it has taken place")
    patient = db.get(Patient, course.patient_id)
    assert patient is not None
    if course.status == CourseStatus.WITHDRAWN:
        raise UserError("session", f"session {session.id} belongs to withdrawn course "
                        f"{course.id}")
    result = enroll(db, planner, patient, SessionVisit(course.treatment, session.at),
                    course=course)
    return Booking(result.session, course, result.changes)


def _booked_only(db: DbSession, session: Session, action: str) -> Course:
    if session.status != SessionStatus.BOOKED:
        raise UserError("session", f"session {session.id} is {session.status.replace('_', '-')}"
                        f"; only a booked session can {action}")
    course = db.get(Course, session.course_id)
    assert course is not None
    return course
