"""Courses: a patient's series of sessions of one treatment, shown and withdrawn."""

from __future__ import annotations

from sqlmodel import Session as DbSession

from aftercare.history import record
from aftercare.models import Course, CourseStatus, SessionStatus
from aftercare.planning import PlanChanges, Planner, replan
from aftercare.queries import sessions_of


def withdraw(db: DbSession, planner: Planner, course: Course,
             reason: str | None = None) -> PlanChanges:
    """Stop a course: its booked sessions are cancelled and nothing pending for it is sent."""
    if course.status == CourseStatus.WITHDRAWN:
        return PlanChanges()
    now = planner.clock()
    course.status = CourseStatus.WITHDRAWN
    db.add(course)
    for session in sessions_of(db, course):
        if session.status == SessionStatus.BOOKED:
            session.status = SessionStatus.CANCELLED
            db.add(session)
            record(db, now, "session.cancelled", course.patient_id,
                   f"session {session.number}: course withdrawn", course_id=course.id,
                   session_id=session.id)
    record(db, now, "course.withdrawn", course.patient_id, reason or "", course_id=course.id)
    return replan(db, planner, course, "course withdrawn")
