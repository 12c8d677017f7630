"""Delivery receipts: what the provider later says about a message it accepted."""

from __future__ import annotations

import logging
import random

from sqlmodel import Session as DbSession
from sqlmodel import select

from aftercare.channels.twilio_sms import receipt_error
from aftercare.config import Settings
from aftercare.dispatch import retry_delay
from aftercare.history import record
from aftercare.models import Message, MessageStatus, Patient
from aftercare.patients import close_route
from aftercare.planning import Planner

log = logging.getLogger(__name__)

# Twilio's statuses before the final one: ours is already `sent`, and never goes back.
_ON_ITS_WAY = {"accepted", "scheduled", "queued", "sending", "sent"}
_DELIVERED = {"delivered", "read"}
_NOT_DELIVERED = {"undelivered", "failed"}
# Ours that a receipt may still change: accepted, or waiting to retry after a receipt.
_OPEN = (MessageStatus.SENT, MessageStatus.PENDING)


def apply_receipt(db: DbSession, planner: Planner, settings: Settings, provider_id: str,
                  status: str, error_code: int | None, rng: random.Random,
                  to: str | None = None) -> str:
    """Record a delivery receipt for the message the provider knows as `provider_id`.

    Idempotent, and statuses never go backwards: the first final word wins, a late
    "sent" changes nothing. Returns what happened (for logs and tests): ignored,
    delivered, undelivered, failed or retrying. Flushes, does not commit.
    """
    now = planner.clock()
    message = db.exec(select(Message).where(Message.provider_id == provider_id)
                      .with_for_update()).first()
    if message is None:
        log.info("receipt for an unknown message; ignored")
        return "ignored"
    if status in _ON_ITS_WAY or message.status not in _OPEN:
        return "ignored"
    if message.status == MessageStatus.PENDING and status not in _DELIVERED:
        return "ignored"  # already waiting to retry after an earlier receipt
    if status in _DELIVERED:
        # Also a retry planned after an earlier transient receipt: it got there after all.
        message.status, message.delivered_at = MessageStatus.DELIVERED, now
        message.updated_at = now
        db.add(message)
        return "delivered"
    if status not in _NOT_DELIVERED:
        return "ignored"  # a status this release does not know: nothing to act on
    error = receipt_error(status, error_code)
    message.last_error = error.describe()
    message.updated_at = now
    limit = getattr(settings, message.channel).max_attempts
    retry_at = now + retry_delay(settings, message.attempts, rng)
    if error.retryable(message.attempts, limit) and retry_at < message.expires_at:
        # Not on the phone yet, and worth another try within its window: the dispatcher
        # sends it again (its provider id stays, so a late "delivered" still finds it).
        message.status, message.send_after = MessageStatus.PENDING, retry_at
        outcome = "retrying"
    else:
        message.status = (MessageStatus.FAILED if status == "failed"
                          else MessageStatus.UNDELIVERED)
        message.flag = error.flag
        outcome = str(message.status)
    db.add(message)
    record(db, now, f"message.{outcome}", message.patient_id,
           f"{message.step}/{message.channel}: {message.last_error}",
           course_id=message.course_id, session_id=message.session_id, message_id=message.id)
    if error.consequence:
        patient = db.get(Patient, message.patient_id, with_for_update=True,
                         populate_existing=True)
        assert patient is not None
        # A late receipt about a number the desk has since replaced says nothing of the
        # new one (`to` is the number the message went to, when the provider says).
        if to is None or to == patient.phone:
            close_route(db, planner, patient, error.consequence, f"provider error {error.code}")
    log.info("message %s: receipt %s (%s)", message.id, outcome, error.code)
    return outcome
