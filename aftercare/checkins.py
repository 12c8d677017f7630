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

from aftercare.history import record
from aftercare.models import (
    Course,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.protocols import ProtocolBook, Question
from aftercare.queries import neighbour_session
from aftercare.triage import fold

# An answer counts for a question the patient was sent on SMS and that is still open.
_ASKED = (MessageStatus.SENT, MessageStatus.DELIVERED)


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
            col(Message.status).in_(_ASKED)).order_by(col(Message.sent_at).desc())
            .limit(10)).all():
        course = db.get(Course, message.course_id)
        session = db.get(Session, message.session_id)
        if course is None or session is None:
            continue
        try:
            question = protocols.get(course.treatment).step(message.step).question
        except KeyError:
            continue
        if question is None or session.status != SessionStatus.BOOKED or session.at <= now:
            continue
        # The reminder asks only when there was a session before (its bruising).
        if neighbour_session(db, session, SessionStatus.COMPLETED, later=False) is None:
            continue
        return Asked(session, question)
    return None


def answer_of(question: Question, text: str) -> str | None:
    """The answer a reply gives: the whole message is one of the answers, or it mentions
    the question's subject (e.g. "still a bruise on my thigh"); else None."""
    whole = text.strip().rstrip(".!").strip()
    if whole in question.answers:
        return question.answers[whole]
    words = re.findall(r"[a-z]+", fold(text))
    for mention in question.mentions:
        stem = mention.rstrip("*")
        if any(word == stem or (mention.endswith("*") and word.startswith(stem))
               for word in words):
            return question.mentions_answer
    return None


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
