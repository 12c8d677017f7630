"""Queries many modules ask: one function each, so "a course's sessions" means one thing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import sqlalchemy
from sqlmodel import Session as DbSession
from sqlmodel import SQLModel, col, select

from aftercare.models import Course, Notice, NoticeKind, Patient, Session

Row = TypeVar("Row", bound=SQLModel)

MAX_ID = 2**63 - 1  # the largest id a database column holds; larger is nobody's


@dataclass(frozen=True, slots=True)
class SessionRow:
    """What the plan and the templates read of a session, as read: not tracked by the ORM,
    which cost the dispatcher more to build than judging the messages did."""

    id: int
    course_id: int
    number: int
    at: datetime
    moves: int
    status: str


# A session as the plan's rule and the templates take it: either kind reads the same.
AnySession = Session | SessionRow


def get_by_id(db: DbSession, model: type[Row], ident: int) -> Row | None:
    """The row of `model` with this id, or None (an id no column can hold included)."""
    return db.get(model, ident) if 0 < ident <= MAX_ID else None


def sessions_of(db: DbSession, course: Course) -> list[Session]:
    """The course's sessions in time order, whatever their status."""
    return list(db.exec(select(Session).where(Session.course_id == course.id)
                        .order_by(col(Session.at), col(Session.id))).all())


def sessions_of_courses(db: DbSession, course_ids: Iterable[int]) -> dict[int, list[SessionRow]]:
    """Each course's sessions in `sessions_of`'s order, read in one query, as SessionRow."""
    wanted = sorted(set(course_ids))
    found: dict[int, list[SessionRow]] = {i: [] for i in wanted}
    if wanted:
        # Core on the session's connection (in its transaction): plain rows, no ORM objects.
        table = sqlalchemy.inspect(Session).local_table
        for row in db.connection().execute(
                sqlalchemy.select(table.c.id, table.c.course_id, table.c.number, table.c.at,
                                  table.c.moves, table.c.status)
                .where(table.c.course_id.in_(wanted)).order_by(table.c.at, table.c.id)):
            found[row.course_id].append(SessionRow(*row))
    return found


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


def neighbour_session(db: DbSession, session: AnySession, status: str, *,
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
