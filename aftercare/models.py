"""The tables. The message table is the queue: every planned send is a row."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, so SQLite and PostgreSQL behave alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(nullable: bool = False) -> Column:
    return Column(UTCDateTime(), nullable=nullable)


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider's receipt: on the phone
    UNDELIVERED = "undelivered"  # the provider's receipt: it could not be delivered
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class SessionStatus(StrEnum):
    BOOKED = "booked"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


# Accepted by the provider and not known to have failed: what the patient has (probably) had.
ACCEPTED = (MessageStatus.SENT, MessageStatus.DELIVERED)

# Sessions that happen or will happen; cancelled and missed ones plan nothing.
LIVE_SESSIONS = (SessionStatus.BOOKED, SessionStatus.COMPLETED)


class CourseStatus(StrEnum):
    ACTIVE = "active"  # sessions of the course still to come
    COMPLETED = "completed"  # every planned session done: maintenance follows
    WITHDRAWN = "withdrawn"


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    ref: str | None = Field(default=None, unique=True, max_length=64)
    name: str = Field(max_length=200)
    phone: str | None = Field(default=None, max_length=20)  # E.164
    email: str | None = Field(default=None, max_length=254)
    timezone: str = Field(max_length=64)
    locale: str = Field(max_length=8)
    channels: str = Field(max_length=20)  # consented channels, comma-separated: "sms,email"
    sms_opted_out_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    email_opted_out_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    phone_invalid_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    email_invalid_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # Set by `patient forget`: personal data erased, the row kept for anonymous counts.
    forgotten_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(sa_column=_utc())

    @property
    def channel_list(self) -> list[str]:
        return [c for c in self.channels.split(",") if c]

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else self.name

    def unreachable_reason(self, channel: str) -> str | None:
        """Why this patient must not get a message on `channel` now, or None."""
        if self.forgotten_at:
            return "patient forgotten"
        if channel not in self.channel_list:
            return f"patient has not consented to {channel}"
        if channel == "sms":
            if not self.phone:
                return "patient has no phone number"
            if self.sms_opted_out_at:
                return "patient opted out of sms"
            if self.phone_invalid_at:
                return "patient's phone number is invalid"
        if channel == "email":
            if not self.email:
                return "patient has no email address"
            if self.email_opted_out_at:
                return "patient opted out of email"
            if self.email_invalid_at:
                return "patient's email address is invalid"
        return None


class Course(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    treatment: str = Field(max_length=64)
    area: str = Field(default="", max_length=100)
    sessions_planned: int
    spacing_days: int = Field(default=7)  # the ideal interval between sessions: nudges time on it
    status: str = Field(default=CourseStatus.ACTIVE, max_length=16)
    created_at: datetime = Field(sa_column=_utc())


class Session(SQLModel, table=True):
    """One visit. Named for the domain; SQLModel's own Session is imported as DbSession."""

    __table_args__ = (UniqueConstraint("course_id", "at", name="uq_session_course_at"),
                      # The console's "today's sessions".
                      Index("ix_session_at", "at"))

    id: int | None = Field(default=None, primary_key=True)
    course_id: int = Field(foreign_key="course.id", index=True)
    number: int
    number_fixed: bool = False  # given by staff (--session-number): renumbering keeps it
    at: datetime = Field(sa_column=_utc())
    # Times moved; reminders of each new time are new messages (those of the old time may
    # have gone), numbered by this in Message.occurrence.
    moves: int = 0
    status: str = Field(default=SessionStatus.BOOKED, max_length=16)
    # The patient's answer to a check-in before this session (e.g. bruising: "gone",
    # "still_there"), when, and what staff must do about it (a booked session to move).
    checkin: str | None = Field(default=None, max_length=32)
    checkin_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    flag: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=_utc())


class Message(SQLModel, table=True):
    """One planned send on one channel; its status is its place in the queue."""

    __table_args__ = (
        # Planning the same session twice plans nothing new; `occurrence` numbers the
        # reminders of a series (maintenance) that share one session and step.
        UniqueConstraint("session_id", "step", "occurrence", "channel",
                         name="uq_message_session_step_occurrence_channel"),
        # The dispatcher's only hot query: due pending rows, oldest first.
        Index("ix_message_status_send_after", "status", "send_after"),
        # Delivery receipts find their message by the provider's id.
        Index("ix_message_provider_id", "provider_id"),
        # The console's "sent today".
        Index("ix_message_sent_at", "sent_at"),
        # The console's messages "soonest due first" across every status.
        Index("ix_message_send_after", "send_after"),
    )

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    course_id: int = Field(foreign_key="course.id", index=True)
    session_id: int = Field(foreign_key="session.id")
    step: str = Field(max_length=64)
    occurrence: int = 0
    channel: str = Field(max_length=16)
    status: str = Field(default=MessageStatus.PENDING, max_length=16)
    # When the plan puts it (from its session and step); send_after may move later for
    # quiet hours or retries, and the plan moves both when the session is rescheduled.
    planned_at: datetime = Field(sa_column=_utc())
    send_after: datetime = Field(sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    attempts: int = 0
    # A claim (status sending) belongs to the sender holding this token; its lease counts
    # from claimed_at, renewed when the send starts. Every later write checks both.
    claim_token: str | None = Field(default=None, max_length=32)
    claimed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # Something staff should look at (e.g. the carrier filtered it as spam); never patient data.
    flag: str | None = Field(default=None, max_length=200)
    provider_id: str | None = Field(default=None, max_length=64)
    subject: str | None = Field(default=None, max_length=300)
    body: str | None = Field(default=None, sa_type=Text)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())


class Event(SQLModel, table=True):
    """One change to a patient's plan and why: the audit trail staff read in `timeline`."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_utc())
    patient_id: int = Field(foreign_key="patient.id", index=True)
    course_id: int | None = Field(default=None, foreign_key="course.id")
    session_id: int | None = Field(default=None, foreign_key="session.id")
    message_id: int | None = Field(default=None, foreign_key="message.id")
    kind: str = Field(max_length=40)  # e.g. session.booked, message.cancelled
    # Never contact data or message text; staff's free-text reasons are erased on forget.
    detail: str = Field(default="", max_length=500)
    # Who made the change: a staff member's email (console), "cli", or "aftercare" (the
    # service itself: a STOP, a receipt). None on events recorded before this was kept.
    actor: str | None = Field(default=None, max_length=254)


class ReplyStatus(StrEnum):
    OPEN = "open"  # waiting for staff
    ACKNOWLEDGED = "acknowledged"  # someone has it in hand
    CLOSED = "closed"
    HANDLED = "handled"  # a keyword (STOP, START, HELP): acted on, nothing for staff


class TriageLevel(StrEnum):
    URGENT = "urgent"
    REVIEW = "review"
    ROUTINE = "routine"


class Reply(SQLModel, table=True):
    """One message a patient (or an unknown number) sent us: the inbox and the conversation.

    Stored before anything is done about it, so a crash never loses it; `handled_at` says
    its consequences (opt-out, automatic answer) were carried out.
    """

    id: int | None = Field(default=None, primary_key=True)
    # The provider's id (Twilio's MessageSid): the same webhook twice is one reply.
    provider_id: str = Field(max_length=64, unique=True)
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    from_number: str | None = Field(default=None, max_length=20)
    to_number: str | None = Field(default=None, max_length=20)
    body: str | None = Field(default=None, sa_type=Text)
    received_at: datetime = Field(sa_column=_utc())
    keyword: str | None = Field(default=None, max_length=16)  # stop, start, help
    triage: str | None = Field(default=None, max_length=16)
    status: str = Field(default=ReplyStatus.OPEN, max_length=16, index=True)
    answer: str | None = Field(default=None, sa_type=Text)  # our automatic answer, if any
    handled_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    acknowledged_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    note: str | None = Field(default=None, max_length=500)


class NoticeKind(StrEnum):
    ALERT = "alert"  # to the clinic's on-call contact: an urgent reply arrived
    ESCALATION = "escalation"  # the same, again: nobody acknowledged it in time
    STAFF_REPLY = "staff_reply"  # staff's own SMS to a patient (`aftercare reply`)


class NoticeStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Notice(SQLModel, table=True):
    """A message outside the plan (an alert to the clinic, a staff reply): stored, then sent.

    Committed before the send, so nothing is lost; claimed by a compare-and-swap on its
    status, so two senders do not both send it.
    """

    # One staff form submitted twice (a double click, a retried request) is one notice.
    __table_args__ = (Index("ux_notice_request_key", "request_key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    reply_id: int | None = Field(default=None, foreign_key="reply.id", index=True)
    patient_id: int | None = Field(default=None, foreign_key="patient.id", index=True)
    channel: str = Field(max_length=16)
    to_address: str | None = Field(default=None, max_length=254)
    subject: str | None = Field(default=None, max_length=300)
    body: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default=NoticeStatus.PENDING, max_length=16, index=True)
    attempts: int = 0
    claimed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    send_after: datetime = Field(sa_column=_utc())
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    provider_id: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=500)
    staff: str | None = Field(default=None, max_length=100)  # who sent it ("cli" for the CLI)
    request_key: str | None = Field(default=None, max_length=80)
    created_at: datetime = Field(sa_column=_utc())


class PollCursor(SQLModel, table=True):
    """How far `sms.inbound = "poll"` has read the provider's lists (kept across restarts)."""

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", max_length=200)
    updated_at: datetime = Field(sa_column=_utc())


class SendPace(SQLModel, table=True):
    """When a channel's next send may start: its provider account's rate, one row shared by
    every sender on the database (channels/rate_limit.py, SharedPace)."""

    name: str = Field(primary_key=True, max_length=16)
    next_at: datetime = Field(sa_column=_utc())


class StaffRole(StrEnum):
    FRONTDESK = "frontdesk"  # patients, enrollments, bookings, routine replies
    CLINICIAN = "clinician"  # and urgent and review replies
    ADMIN = "admin"  # and users, import, forget, setup checks


class StaffUser(SQLModel, table=True):
    """A console login. The password is kept only as an Argon2id hash."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=200)
    locale: str | None = Field(default=None, max_length=8)  # None: the clinic's language
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    disabled_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_login_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(sa_column=_utc())


class StaffSession(SQLModel, table=True):
    """One signed-in browser. The cookie carries a random token; only its hash is kept."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="staffuser.id", index=True)
    csrf: str = Field(max_length=64)  # the token every form of this session must carry
    flash: str | None = Field(default=None, max_length=500)  # one line shown on the next page
    created_at: datetime = Field(sa_column=_utc())
    last_seen_at: datetime = Field(sa_column=_utc())
