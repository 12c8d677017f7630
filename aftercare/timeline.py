"""Timeline: a patient's sessions and messages, past and future, in one list."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.errors import UserError
from aftercare.models import ACCEPTED, Course, Message, Patient, Session
from aftercare.protocols import ProtocolBook
from aftercare.queries import courses_of


def step_label(message: Message, treatment: str, protocols: ProtocolBook) -> str:
    """The step's key, numbered within a maintenance series ("maintenance #2")."""
    try:
        series = protocols.get(treatment).step(message.step).anchor == "maintenance"
    except (UserError, KeyError):
        series = False
    return f"{message.step} #{message.occurrence}" if series else message.step


@dataclass
class Entry:
    """A session, or one step of one session sent on one or more channels at one time."""

    at: datetime
    kind: str  # "session" or "message"
    course_id: int
    session_id: int
    label: str  # "session 2" or the step key
    statuses: dict[str, str] = field(default_factory=dict)  # channel -> status (messages)
    status: str = ""  # sessions
    notes: dict[str, str] = field(default_factory=dict)  # channel -> why (not sent)

    def note(self) -> str:
        """Why it was not sent, once when every channel shares the reason."""
        reasons = set(self.notes.values())
        if len(reasons) == 1 and len(self.notes) == len(self.statuses):
            return reasons.pop()
        return "; ".join(f"{channel}: {why}" for channel, why in self.notes.items())


@dataclass
class CourseSessions:
    """A course and its sessions in time order."""

    course: Course
    sessions: list[Session] = field(default_factory=list)


def courses_with_sessions(db: DbSession, patient_id: int | None) -> list[CourseSessions]:
    """The patient's courses, oldest first, each with its sessions in time order (two
    queries, however many courses)."""
    found = {c.id: CourseSessions(c) for c in courses_of(db, patient_id)}
    if found:
        for s in db.exec(select(Session).where(col(Session.course_id).in_(list(found)))
                         .order_by(col(Session.at), col(Session.id))).all():
            found[s.course_id].sessions.append(s)
    return list(found.values())


def entries_of(db: DbSession, patient: Patient, courses: list[CourseSessions],
               protocols: ProtocolBook) -> list[Entry]:
    """Every session of `courses` and every message of the patient, in time order."""
    treatments = {c.course.id: c.course.treatment for c in courses}
    entries = [Entry(s.at, "session", s.course_id, s.id or 0, f"session {s.number}",
                     status=s.status, notes={key: value for key, value in (
                         ("checkin", s.checkin), ("flag", s.flag)) if value})
               for c in courses for s in c.sessions]
    grouped: dict[tuple[int, str, int, datetime], Entry] = {}
    for m in db.exec(select(Message).where(Message.patient_id == patient.id)
                     .order_by(col(Message.id))).all():
        at = m.sent_at if m.sent_at else m.send_after
        label = step_label(m, treatments[m.course_id], protocols)
        key = (m.session_id, label, m.course_id, at.replace(second=0, microsecond=0))
        entry = grouped.setdefault(key, Entry(at, "message", m.course_id, m.session_id, label))
        entry.statuses[m.channel] = m.status
        if m.last_error and m.status not in ACCEPTED:
            entry.notes[m.channel] = m.last_error
    entries += grouped.values()
    entries.sort(key=lambda e: (e.at, e.kind != "session", e.label))
    return entries


def timeline(db: DbSession, patient: Patient,
             protocols: ProtocolBook) -> tuple[list[Course], list[Entry]]:
    """The patient's courses and every session and message, in time order."""
    courses = courses_with_sessions(db, patient.id)
    return [c.course for c in courses], entries_of(db, patient, courses, protocols)
