"""Check-ins: a question a reminder asks before a booked session, and the patient's answer.

The question is data on the protocol step (e.g. "has the bruising gone? reply 1 or 2");
the answer is recorded on the booked session, and some answers flag it for staff (a
session waits until bruising has gone, so staff call to move it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.errors import UserError
from aftercare.history import record
from aftercare.models import ACCEPTED, Course, Message, Patient, Session, SessionStatus
from aftercare.protocols import ProtocolBook, Question
from aftercare.queries import neighbour_session
from aftercare.triage import fold


@dataclass(frozen=True)
class Asked:
    """An open question: the booked session it is about, and the question itself."""

    session: Session
    question: Question


def open_question(db: DbSession, protocols: ProtocolBook, patient: Patient,
                  now: datetime) -> Asked | None:
    """The last question the patient was asked by SMS about a session still to come."""
    for message in db.exec(select(Message).where(
            Message.patient_id == patient.id, Message.channel == "sms",
            col(Message.status).in_(ACCEPTED)).order_by(col(Message.sent_at).desc())
            .limit(10)).all():
        course = db.get(Course, message.course_id)
        session = db.get(Session, message.session_id)
        if course is None or session is None:
            continue
        try:
            question = protocols.get(course.treatment).step(message.step).question
        except (KeyError, UserError):
            continue  # a step or a whole protocol the clinic has since removed
        if question is None or session.status != SessionStatus.BOOKED or session.at <= now:
            continue
        # The reminder asks only when there was a session before (its bruising).
        if neighbour_session(db, session, SessionStatus.COMPLETED, later=False) is None:
            continue
        return Asked(session, question)
    return None


def answer_of(question: Question, text: str) -> str | None:
    """The answer a reply gives plainly: the whole message, or its first word ("2", "1 -
    all gone"), is one of the question's answers; else None."""
    words = re.findall(r"\w+", text)
    if words and (words[0] in question.answers) and (len(words) == 1 or not words[1].isdigit()):
        return question.answers[words[0]]
    return None


def mentions(question: Question, text: str) -> bool:
    """Whether a reply speaks of the question's subject (e.g. "the bruise is fading")."""
    words = re.findall(r"[a-z]+", fold(text))
    for mention in question.mentions:
        stem = mention.rstrip("*")
        if any(word == stem or (mention.endswith("*") and word.startswith(stem))
               for word in words):
            return True
    return False


def flag_for_staff(db: DbSession, asked: Asked, now: datetime) -> None:
    """The patient wrote about the question's subject in their own words: staff read it."""
    session = asked.session
    session.flag = f"the patient wrote about {asked.question.key}: read the reply"[:200]
    db.add(session)
    course = db.get(Course, session.course_id)
    assert course is not None
    record(db, now, "session.flagged", course.patient_id,
           f"session {session.number}: a reply about {asked.question.key}",
           course_id=course.id, session_id=session.id)


def record_answer(db: DbSession, asked: Asked, answer: str, now: datetime) -> bool:
    """Record the answer on the session; True when it flags the session for staff."""
    session, question = asked.session, asked.question
    session.checkin, session.checkin_at = f"{question.key}: {answer}", now
    flagged = answer in question.flag_on
    if flagged:
        session.flag = question.flag[:200]
    db.add(session)
    course = db.get(Course, session.course_id)
    assert course is not None
    record(db, now, "session.checkin", course.patient_id,
           f"session {session.number}: {question.key} {answer}"
           + ("; flagged for staff" if flagged else ""),
           course_id=course.id, session_id=session.id)
    return flagged
