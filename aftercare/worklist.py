"""The worklist behind the console's Today page: what needs a person today.

Each question is one query, bounded (a LIMIT) or a count, on the indexes the queue already
has, so Today costs the same with 200 messages or 200,000. "Today" is the clinic's calendar
day in its own time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import Case, case
from sqlmodel import Session as DbSession
from sqlmodel import col, func, select

from aftercare.models import (
    LIVE_SESSIONS,
    Course,
    Message,
    MessageStatus,
    Patient,
    Reply,
    ReplyStatus,
    Session,
    TriageLevel,
)

# Failures older than this have had their chance on Today; the Messages page keeps them all.
FAILURE_DAYS = 7
WAITING = (ReplyStatus.OPEN, ReplyStatus.ACKNOWLEDGED)
# A message waiting to go (or going right now).
UNSENT = (MessageStatus.PENDING, MessageStatus.SENDING)
# What a person must look at: the provider refused it, or the phone never got it.
NEEDS_A_PERSON = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)


@dataclass(frozen=True)
class Day:
    """One calendar day of the clinic: its date and where it starts and ends, in UTC."""

    date: date
    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def day_of(when: date, tz: ZoneInfo) -> Day:
    """The clinic's day `when`, from local midnight to the next (23 or 25 hours on DST days)."""
    start = datetime.combine(when, time(0), tzinfo=tz)
    end = datetime.combine(when + timedelta(days=1), time(0), tzinfo=tz)
    return Day(when, start.astimezone(UTC), end.astimezone(UTC))


def clinic_day(now: datetime, tz: ZoneInfo) -> Day:
    """The clinic's calendar day that `now` falls in."""
    return day_of(now.astimezone(tz).date(), tz)


def _level_rank() -> Case[int]:
    # Urgent first, then review, then routine: the inbox's order.
    return case((col(Reply.triage) == TriageLevel.URGENT, 0),
                (col(Reply.triage) == TriageLevel.REVIEW, 1), else_=2)


def waiting_replies(db: DbSession, levels: tuple[str, ...] = (TriageLevel.URGENT,
                                                              TriageLevel.REVIEW),
                    limit: int = 50) -> list[Reply]:
    """Replies at `levels` nobody has closed yet, urgent first, then the longest waiting."""
    return list(db.exec(select(Reply).where(
        col(Reply.keyword).is_(None), col(Reply.status).in_(WAITING),
        col(Reply.triage).in_(levels))
        .order_by(_level_rank(), col(Reply.received_at), col(Reply.id))
        .limit(limit)).all())


def waiting_counts(db: DbSession) -> dict[str, int]:
    """How many replies wait at each triage level (urgent, review, routine)."""
    counts = {level.value: 0 for level in TriageLevel}
    for level, n in db.exec(select(Reply.triage, func.count()).where(
            col(Reply.keyword).is_(None), col(Reply.status).in_(WAITING))
            .group_by(col(Reply.triage))).all():
        counts[level or TriageLevel.ROUTINE] = counts.get(level or TriageLevel.ROUTINE, 0) + n
    return counts


def due_count(db: DbSession, day: Day) -> int:
    """Messages still to send whose time falls in `day` (including any overdue today)."""
    return db.exec(select(func.count()).select_from(Message).where(
        col(Message.status).in_(UNSENT), col(Message.send_after) >= day.start,
        col(Message.send_after) < day.end)).one()


def next_due(db: DbSession, day: Day, limit: int = 5) -> list[tuple[Message, Patient]]:
    """The first messages waiting to go in `day`, soonest first, with their patients."""
    # Pending only (not those being sent this second): one index range, read in order.
    return [(m, p) for m, p in db.exec(
        select(Message, Patient).join(Patient, col(Patient.id) == col(Message.patient_id))
        .where(Message.status == MessageStatus.PENDING, col(Message.send_after) >= day.start,
               col(Message.send_after) < day.end)
        .order_by(col(Message.send_after), col(Message.id)).limit(limit)).all()]


def sent_counts(db: DbSession, day: Day) -> dict[str, int]:
    """Messages handed to the provider in `day`, by what became of them since."""
    return {status: n for status, n in db.exec(
        select(Message.status, func.count()).where(
            col(Message.sent_at) >= day.start, col(Message.sent_at) < day.end)
        .group_by(col(Message.status))).all()}


@dataclass(frozen=True)
class Failure:
    """A message that failed or never reached the patient, and what a person should do."""

    message: Message
    patient: Patient
    remedy: Remedy


def failures(db: DbSession, now: datetime, limit: int = 20,
             days: int = FAILURE_DAYS) -> tuple[list[Failure], int]:
    """Failed or undelivered messages of the last `days` (newest first, at most `limit`)
    and how many there are in all. Forgotten patients are left out: nothing to do."""
    since = now - timedelta(days=days)
    where = (col(Message.status).in_(NEEDS_A_PERSON), col(Message.send_after) >= since,
             col(Patient.forgotten_at).is_(None))
    found = db.exec(select(Message, Patient)
                    .join(Patient, col(Patient.id) == col(Message.patient_id)).where(*where)
                    .order_by(col(Message.send_after).desc(), col(Message.id).desc())
                    .limit(limit)).all()
    total = db.exec(select(func.count()).select_from(Message)
                    .join(Patient, col(Patient.id) == col(Message.patient_id)).where(*where)).one()
    return [Failure(m, p, remedy(m.channel, m.last_error)) for m, p in found], total


@dataclass(frozen=True)
class Visit:
    """One of the day's sessions: who comes, for what, and their check-in answer."""

    session: Session
    course: Course
    patient: Patient


def sessions_on(db: DbSession, day: Day, limit: int = 200) -> list[Visit]:
    """The sessions booked (or already done) in `day`, in time order, with their patients."""
    return [Visit(s, c, p) for s, c, p in db.exec(
        select(Session, Course, Patient)
        .join(Course, col(Course.id) == col(Session.course_id))
        .join(Patient, col(Patient.id) == col(Course.patient_id))
        .where(col(Session.status).in_(LIVE_SESSIONS), col(Session.at) >= day.start,
               col(Session.at) < day.end, col(Patient.forgotten_at).is_(None))
        .order_by(col(Session.at), col(Session.id)).limit(limit)).all()]


def closed_replies(db: DbSession, offset: int, limit: int) -> list[Reply]:
    """Replies staff have closed, the most recently closed first (the inbox's archive)."""
    return list(db.exec(select(Reply).where(col(Reply.keyword).is_(None),
                                            Reply.status == ReplyStatus.CLOSED)
                        .order_by(col(Reply.closed_at).desc(), col(Reply.id).desc())
                        .offset(offset).limit(limit)).all())


class Remedy(StrEnum):
    """What a person should do about a message that failed, by what the provider said."""

    CHECK_PHONE = "check_phone"  # the number does not exist or is mistyped
    NOT_MOBILE = "not_mobile"  # a landline, or a carrier that takes no SMS
    OPTED_OUT = "opted_out"  # the patient texted STOP
    UNREACHABLE = "unreachable"  # phone off or out of coverage for the whole window
    CARRIER_FILTERED = "carrier_filtered"  # the carrier took it for spam
    ASK_EMAIL = "ask_email"  # the mailbox refused it
    SETUP = "setup"  # our own credentials, sender or channel setup
    TEMPLATE = "template"  # the message could not be written from its template
    SERVICE = "service"  # the service kept failing to send it (network, crashes)
    CALL = "call"  # nothing more specific: reach the patient another way


# Twilio's error codes (send time and delivery receipts) by what they mean for the desk.
_SMS_CODES = {21211: Remedy.CHECK_PHONE, 30005: Remedy.CHECK_PHONE,
              21614: Remedy.NOT_MOBILE, 30006: Remedy.NOT_MOBILE,
              21610: Remedy.OPTED_OUT, 30007: Remedy.CARRIER_FILTERED,
              30003: Remedy.UNREACHABLE, 30008: Remedy.UNREACHABLE,
              21212: Remedy.SETUP, 21606: Remedy.SETUP}
_CODE = re.compile(r"^(\d+): ")


def remedy(channel: str, last_error: str | None) -> Remedy:
    """What to do about a failed message, from its channel and stored error
    (`SendError.describe()`: the provider's code, then why)."""
    error = last_error or ""
    found = _CODE.match(error)
    code = int(found.group(1)) if found else None
    if error.startswith("cannot render"):
        return Remedy.TEMPLATE
    if ("account or sender refused" in error or "refused our login" in error
            or error.startswith("channel not set up")):
        return Remedy.SETUP
    if channel == "sms" and code in _SMS_CODES:
        return _SMS_CODES[code]
    if channel == "email" and code is not None and 500 <= code < 600:
        return Remedy.ASK_EMAIL  # a permanent refusal of the address (550 no such user...)
    if error.startswith(("network:", "internal error", "send interrupted")):
        return Remedy.SERVICE
    return Remedy.CALL


def role_to_answer(db: DbSession, patient_id: int | None) -> str:
    """The role that may text this patient from the clinic now: while one of their replies
    waiting for staff is urgent or review, a clinician answers (as in the inbox)."""
    levels = db.exec(select(Reply.triage).where(
        Reply.patient_id == patient_id, col(Reply.status).in_(WAITING),
        col(Reply.keyword).is_(None))).all()
    return "clinician" if any(level in (TriageLevel.URGENT, TriageLevel.REVIEW)
                              for level in levels) else "frontdesk"


def role_for(reply: Reply) -> str:
    """The staff role that may act on `reply`: urgent and review replies are a clinician's,
    routine ones (and those not yet triaged) the front desk's too."""
    if reply.triage in (TriageLevel.URGENT, TriageLevel.REVIEW):
        return "clinician"
    return "frontdesk"
