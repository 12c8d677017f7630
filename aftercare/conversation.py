"""Conversation: a patient's SMS exchange with the clinic, both ways, in time order.

Three kinds of row make it: what the patient texted (replies, with any automatic answer
given in the webhook's response), what the clinic texted outside the plan (staff replies
and automatic answers sent as notices), and the planned SMS that went out. One query per
kind, each limited to the page asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import exists
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.history import SERVICE
from aftercare.models import Message, Notice, NoticeKind, Reply


class Speaker(StrEnum):
    PATIENT = "patient"  # a reply the patient texted
    STAFF = "staff"  # staff's own words (`aftercare reply`, the console's reply box)
    AUTOMATIC = "automatic"  # an automatic answer to a reply (keyword, acknowledgement)
    PLANNED = "planned"  # a planned aftercare SMS


@dataclass(frozen=True)
class Line:
    """One SMS of the conversation; `text` is None once the patient was forgotten."""

    at: datetime
    speaker: Speaker
    text: str | None
    status: str  # a reply's inbox status; an outgoing SMS's sending status
    by: str | None = None  # who sent an outgoing line: a staff email, "cli", "aftercare"
    triage: str | None = None  # a reply's triage level
    keyword: str | None = None  # a reply's keyword (stop, start, help)
    step: str | None = None  # a planned SMS's protocol step
    course_id: int | None = None  # a planned SMS's course
    error: str | None = None  # why an outgoing SMS failed
    row: int = 0  # the row's id, to keep lines of one moment in a stable order
    answer: bool = False  # an automatic answer riding on its reply: shown right after it

    @property
    def incoming(self) -> bool:
        return self.speaker == Speaker.PATIENT


def conversation(db: DbSession, patient_id: int, page_number: int,
                 size: int) -> tuple[list[Line], bool]:
    """One page of the conversation (page 1: the latest `size` lines), oldest first within
    the page, and whether older lines follow."""
    page_number = max(page_number, 1)
    wanted = page_number * size + 1  # enough of each kind to fill this page and see past it
    lines = [*_replies(db, patient_id, wanted), *_notices(db, patient_id, wanted),
             *_planned(db, patient_id, wanted)]
    lines.sort(key=lambda line: (line.at, line.row, line.answer), reverse=True)
    shown = lines[(page_number - 1) * size:page_number * size]
    return shown[::-1], len(lines) > page_number * size


def _replies(db: DbSession, patient_id: int, limit: int) -> list[Line]:
    # An automatic answer sent as a notice (poll mode, or a reply settled late) is listed
    # with the notices; only one that rode on the webhook's response is listed here.
    queued = exists().where(col(Notice.reply_id) == col(Reply.id))
    rows = db.exec(select(Reply, queued).where(Reply.patient_id == patient_id)
                   .order_by(col(Reply.received_at).desc(), col(Reply.id).desc())
                   .limit(limit)).all()
    lines = []
    for reply, answered_by_notice in rows:
        lines.append(Line(reply.received_at, Speaker.PATIENT, reply.body, reply.status,
                          triage=reply.triage, keyword=reply.keyword, row=reply.id or 0))
        if reply.answer and not answered_by_notice:
            lines.append(Line(reply.handled_at or reply.received_at, Speaker.AUTOMATIC,
                              reply.answer, "sent", by=SERVICE, row=reply.id or 0,
                              answer=True))
    return lines


def _notices(db: DbSession, patient_id: int, limit: int) -> list[Line]:
    rows = db.exec(select(Notice).where(Notice.patient_id == patient_id,
                                        Notice.kind == NoticeKind.STAFF_REPLY)
                   .order_by(col(Notice.created_at).desc(), col(Notice.id).desc())
                   .limit(limit)).all()
    return [Line(n.created_at, Speaker.AUTOMATIC if n.staff == SERVICE else Speaker.STAFF,
                 n.body, n.status, by=n.staff, error=n.last_error, row=n.id or 0)
            for n in rows]


def _planned(db: DbSession, patient_id: int, limit: int) -> list[Line]:
    rows = db.exec(select(Message).where(Message.patient_id == patient_id,
                                         Message.channel == "sms",
                                         col(Message.sent_at).is_not(None))
                   .order_by(col(Message.sent_at).desc(), col(Message.id).desc())
                   .limit(limit)).all()
    return [Line(m.sent_at or m.send_after, Speaker.PLANNED, m.body, m.status, by=SERVICE,
                 step=m.step, course_id=m.course_id, error=m.last_error,
                 row=m.id or 0)
            for m in rows]
