"""Queries many modules ask: one function each, so "a course's sessions" means one thing."""

from __future__ import annotations

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.models import Course, Session


def sessions_of(db: DbSession, course: Course) -> list[Session]:
    """The course's sessions in time order, whatever their status."""
    return list(db.exec(select(Session).where(Session.course_id == course.id)
                        .order_by(col(Session.at), col(Session.id))).all())


def courses_of(db: DbSession, patient_id: int | None) -> list[Course]:
    """The patient's courses, oldest first, whatever their status."""
    return list(db.exec(select(Course).where(Course.patient_id == patient_id)
                        .order_by(col(Course.id))).all())
