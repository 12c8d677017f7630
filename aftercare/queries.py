"""Queries many modules ask: one function each, so "a course's sessions" means one thing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from sqlmodel import Session as DbSession
from sqlmodel import SQLModel, col, select

from aftercare.models import Course, Notice, NoticeKind, Patient, Session

Row = TypeVar("Row", bound=SQLModel)

MAX_ID = 2**63 - 1  # the largest id a database column holds; larger is nobody's


def get_by_id(db: DbSession, model: type[Row], ident: int) -> Row | None:
    """The row of `model` with this id, or None (an id no column can hold included)."""
    return db.get(model, ident) if 0 < ident <= MAX_ID else None


def sessions_of(db: DbSession, course: Course) -> list[Session]:
    """The course's sessions in time order, whatever their status."""
    return list(db.exec(select(Session).where(Session.course_id == course.id)
                        .order_by(col(Session.at), col(Session.id))).all())


def courses_of(db: DbSession, patient_id: int | None) -> list[Course]:
    """The patient's courses, oldest first, whatever their status."""
    return list(db.exec(select(Course).where(Course.patient_id == patient_id)
                        .order_by(col(Course.id))).all())


def patients_by_id(db: DbSession, ids: Iterable[int]) -> dict[int | None, Patient]:
    """The patients with these ids, by id; an id with no patient is left out."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {p.id: p for p in db.exec(select(Patient).where(col(Patient.id).in_(wanted))).all()}


def treatments_by_course(db: DbSession, course_ids: Iterable[int]) -> dict[int | None, str]:
    """Each course's treatment key, by course id; an id with no course is left out."""
    wanted = set(course_ids)
    if not wanted:
        return {}
    return {c.id: c.treatment
            for c in db.exec(select(Course).where(col(Course.id).in_(wanted))).all()}


def alerts_by_reply(db: DbSession, reply_ids: Iterable[int]) -> dict[int, list[Notice]]:
    """The alerts and escalations sent (or queued) about each reply, oldest first."""
    wanted = set(reply_ids)
    found: dict[int, list[Notice]] = {i: [] for i in wanted}
    if wanted:
        for notice in db.exec(select(Notice).where(
                col(Notice.reply_id).in_(wanted),
                col(Notice.kind).in_([NoticeKind.ALERT, NoticeKind.ESCALATION]))
                .order_by(col(Notice.id))).all():
            found[notice.reply_id or 0].append(notice)
    return found


def neighbour_session(db: DbSession, session: Session, status: str, *,
                      later: bool) -> Session | None:
    """The nearest session of the same course with `status`, after or before `session`.

    One row, not the course: rendering a message must not cost more as a course grows.
    """
    query = select(Session).where(Session.course_id == session.course_id,
                                  Session.status == status)
    if later:
        query = query.where(Session.at > session.at).order_by(col(Session.at))
    else:
        query = query.where(Session.at < session.at).order_by(col(Session.at).desc())
    return db.exec(query.limit(1)).first()
