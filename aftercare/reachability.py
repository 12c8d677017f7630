"""Reachability: what a dead route (invalid number, opt-out, refused address) does to the plan."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session as DbSession
from sqlmodel import select

from aftercare.errors import EMAIL_INVALID, PHONE_INVALID, SMS_OPTED_OUT
from aftercare.models import Message, MessageStatus, Patient

_FLAGS = {PHONE_INVALID: ("sms", "phone_invalid_at", "phone number invalid"),
          SMS_OPTED_OUT: ("sms", "sms_opted_out_at", "patient opted out of sms"),
          EMAIL_INVALID: ("email", "email_invalid_at", "email address refused")}


def routes(step_channels: tuple[str, ...], patient: Patient) -> list[str]:
    """The channels a step goes on for this patient now, with email standing in for a dead SMS."""
    chosen = [c for c in step_channels if patient.unreachable_reason(c) is None]
    sms_dead = patient.phone_invalid_at or patient.sms_opted_out_at
    if "sms" in step_channels and "email" not in chosen and sms_dead \
            and patient.unreachable_reason("email") is None:
        chosen.append("email")
    return chosen


def close_route(db: DbSession, patient: Patient, consequence: str, failed: Message,
                now: datetime) -> None:
    """Record that a route is unusable and move the patient's pending messages off it.

    Messages that can go by email instead get an email twin (visible in `aftercare
    messages`); the rest are cancelled. Nothing already sent changes.
    """
    channel, flag, reason = _FLAGS[consequence]
    setattr(patient, flag, now)
    db.add(patient)
    pending = db.exec(select(Message).where(
        Message.patient_id == patient.id, Message.channel == channel,
        Message.status == MessageStatus.PENDING)).all()
    for message in [failed, *pending]:
        twin = _email_twin(db, patient, message, now)
        if message.status == MessageStatus.PENDING:
            message.status = MessageStatus.CANCELLED
            message.last_error = f"{reason}; sent by email instead" if twin else reason
            message.updated_at = now
            db.add(message)


def email_instead(db: DbSession, patient: Patient, message: Message, now: datetime) -> bool:
    """For an SMS found on a closed route at send time: make sure it goes by email instead."""
    if message.channel != "sms" or not (patient.phone_invalid_at or patient.sms_opted_out_at):
        return False
    return _email_twin(db, patient, message, now)


def _email_twin(db: DbSession, patient: Patient, message: Message, now: datetime) -> bool:
    """Make sure an SMS that cannot go has an email counterpart; False if none is possible."""
    if message.channel != "sms" or not patient.email or patient.email_opted_out_at \
            or patient.email_invalid_at or message.expires_at <= now:
        return False
    if "email" not in patient.channel_list:
        # The patient gave the clinic an address; it becomes their route for aftercare.
        patient.channels = ",".join([*patient.channel_list, "email"])
        db.add(patient)
    exists = db.exec(select(Message.id).where(
        Message.session_id == message.session_id, Message.step == message.step,
        Message.occurrence == message.occurrence, Message.channel == "email")).first()
    if exists is None:
        db.add(Message(patient_id=message.patient_id, course_id=message.course_id,
                       session_id=message.session_id, step=message.step,
                       occurrence=message.occurrence, channel="email",
                       status=MessageStatus.PENDING, planned_at=message.planned_at,
                       send_after=max(message.send_after, now),
                       expires_at=message.expires_at, created_at=now, updated_at=now))
    return True
