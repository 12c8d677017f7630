"""Enrollment: a completed session becomes a course entry and a plan of message rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session as DbSession
from sqlmodel import col, func, select

from aftercare.clock import Clock, zone
from aftercare.errors import UserError
from aftercare.models import (
    Course,
    CourseStatus,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.protocols import Protocol, Step
from aftercare.quiet_hours import QuietHours

# A session "in the future" by less than this is clock skew between the clinic's systems.
FUTURE_TOLERANCE = timedelta(minutes=15)


@dataclass(frozen=True)
class SessionVisit:
    """What staff say about a session they just finished."""

    treatment: str
    session_at: datetime
    area: str | None = None
    session_number: int | None = None
    sessions_planned: int | None = None
    next_session_at: datetime | None = None


@dataclass
class Enrollment:
    """The result of enrolling: the course, the session, and its planned messages."""

    course: Course
    session: Session
    next_session: Session | None
    messages: list[Message] = field(default_factory=list)
    created: int = 0


def enroll(
    db: DbSession,
    patient: Patient,
    protocol: Protocol,
    visit: SessionVisit,
    *,
    quiet: QuietHours,
    clock: Clock,
) -> Enrollment:
    """Record the session and plan its messages; enrolling the same session again plans nothing."""
    now = clock()
    _check_visit(visit, now)
    course = _course_for(db, patient, protocol, visit, now)
    session = _completed_session(db, course, visit, now)
    next_session = _booked_session(db, course, session, visit.next_session_at, now)
    result = Enrollment(course=course, session=session, next_session=next_session)
    tz = zone(patient.timezone)
    anchors = [s.id for s in (session, next_session) if s is not None]
    planned = {(m.session_id, m.step, m.channel): m for m in db.exec(
        select(Message).where(col(Message.session_id).in_(anchors)))}
    for step in protocol.steps:
        anchor = session if step.anchor == "session" else next_session
        if anchor is None or not step.applies_to(session.number, course.sessions_planned):
            continue
        for channel in step.channels:
            if patient.unreachable_reason(channel) is not None:
                continue
            message = planned.get((anchor.id, step.key, channel))
            if message is None:
                message = _plan(db, patient, course, anchor, step, channel, tz, quiet, now)
                if message is None:
                    continue
                result.created += 1
            result.messages.append(message)
    db.commit()
    return result


def _check_visit(visit: SessionVisit, now: datetime) -> None:
    if visit.session_at > now + FUTURE_TOLERANCE:
        raise UserError("session-at", "is in the future; enroll a patient after the session "
                        "(a booked one goes in --next-session-at)")
    if visit.next_session_at is not None and visit.next_session_at <= visit.session_at:
        raise UserError("next-session-at", "must be after --session-at")
    if visit.sessions_planned is not None and visit.sessions_planned < 1:
        raise UserError("sessions-planned", "must be 1 or more")
    if visit.session_number is not None and visit.session_number < 1:
        raise UserError("session-number", "must be 1 or more")


def _course_for(
    db: DbSession, patient: Patient, protocol: Protocol, visit: SessionVisit, now: datetime
) -> Course:
    course = db.exec(
        select(Course)
        .where(Course.patient_id == patient.id, Course.treatment == protocol.key,
               Course.status == CourseStatus.ACTIVE)
        .order_by(col(Course.id).desc())
    ).first()
    if course is None:
        course = Course(patient_id=patient.id, treatment=protocol.key, area=visit.area or "",
                        sessions_planned=visit.sessions_planned or protocol.sessions,
                        created_at=now)
    else:
        if visit.sessions_planned is not None:
            course.sessions_planned = visit.sessions_planned
        if visit.area:
            course.area = visit.area
    db.add(course)
    db.flush()
    return course


def _completed_session(db: DbSession, course: Course, visit: SessionVisit, now: datetime) -> Session:
    session = _session_at(db, course, visit.session_at)
    if session is not None and session.status == SessionStatus.CANCELLED:
        raise UserError("session-at", f"session {session.id} at that time was cancelled; "
                        "enroll with the time the patient actually came")
    if session is None:
        done = db.exec(
            select(func.count()).select_from(Session).where(
                Session.course_id == course.id, Session.status == SessionStatus.COMPLETED)
        ).one()
        session = Session(course_id=course.id, number=done + 1, at=visit.session_at,
                          created_at=now)
    if visit.session_number is not None:
        session.number = visit.session_number
    session.status = SessionStatus.COMPLETED
    db.add(session)
    db.flush()
    return session


def _booked_session(
    db: DbSession, course: Course, done: Session, at: datetime | None, now: datetime
) -> Session | None:
    if at is None:
        return None
    session = _session_at(db, course, at)
    if session is None:
        session = Session(course_id=course.id, number=done.number + 1, at=at,
                          status=SessionStatus.BOOKED, created_at=now)
        db.add(session)
        db.flush()
    return session


def _session_at(db: DbSession, course: Course, at: datetime) -> Session | None:
    return db.exec(select(Session).where(Session.course_id == course.id,
                                         Session.at == at)).first()


def _plan(
    db: DbSession,
    patient: Patient,
    course: Course,
    anchor: Session,
    step: Step,
    channel: str,
    tz: ZoneInfo,
    quiet: QuietHours,
    now: datetime,
) -> Message | None:
    """A new message for (anchor, step, channel), or None when it is too late to be worth it."""
    planned = quiet.next_allowed(step.planned_at(anchor.at, tz), tz)
    if planned + step.valid_for <= now:
        return None  # enrolled too late for this step to be worth sending
    # A late enrollment sends what is still relevant now, with a full window from now.
    send_after = quiet.next_allowed(max(planned, now), tz)
    expires_at = send_after + step.valid_for
    if step.anchor == "next_session":
        # A reminder of a session is worthless once the session has begun.
        expires_at = min(expires_at, anchor.at)
    if expires_at <= send_after:
        return None
    message = Message(patient_id=patient.id, course_id=course.id, session_id=anchor.id,
                      step=step.key, channel=channel, status=MessageStatus.PENDING,
                      send_after=send_after, expires_at=expires_at, created_at=now,
                      updated_at=now)
    db.add(message)
    return message
