"""Notices: messages outside the plan: alerts to the clinic's on-call contact about urgent
replies (and their escalation), staff replies to a patient, automatic answers in poll mode.

Each is a row committed before it is sent (nothing lost), claimed by a compare-and-swap on
its status (two senders never both send it), and retried on transient failures.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.app import App
from aftercare.channels import Outgoing
from aftercare.config import Settings
from aftercare.dispatch import retry_delay
from aftercare.errors import SendError, UserError
from aftercare.history import actor_of, record
from aftercare.metrics import count_notice
from aftercare.models import (
    Notice,
    NoticeKind,
    NoticeStatus,
    Patient,
    Reply,
    ReplyStatus,
    TriageLevel,
)
from aftercare.patients import close_route

log = logging.getLogger(__name__)

# An urgent reply nobody acknowledged is escalated this many times at most, one
# `triage.escalate_after_minutes` apart: enough to reach someone, not a pager storm.
MAX_ESCALATIONS = 3


@dataclass
class NoticeCounts:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def alert_on_call(db: DbSession, settings: Settings, reply: Reply, patient: Patient | None,
                  now: datetime, kind: str = NoticeKind.ALERT) -> list[Notice]:
    """Queue an SMS to `clinic.on_call_phone` and an email to `clinic.alerts_email`: an
    urgent reply arrived. The SMS names the patient and where to read it, never the text."""
    clinic = settings.clinic
    who = _who(patient, reply)
    again = " (still not acknowledged)" if kind == NoticeKind.ESCALATION else ""
    queued = []
    if clinic.on_call_phone:
        queued.append(_queue(db, kind, "sms", clinic.on_call_phone, now, reply=reply,
                             body=f"{clinic.name}: URGENT reply from {who}{again}. Read it "
                                  f"in the inbox (reply {reply.id}) and call the patient."))
    if clinic.alerts_email:
        queued.append(_queue(db, kind, "email", clinic.alerts_email, now, reply=reply,
                             subject=f"Urgent reply from {who}{again}",
                             body=f"An urgent reply arrived from {who} at "
                                  f"{reply.received_at:%Y-%m-%d %H:%M} UTC{again}:\n\n"
                                  f"{reply.body or ''}\n\nAcknowledge it with `aftercare inbox "
                                  f"ack {reply.id}` once someone has it in hand.\n"))
    if not queued:
        log.warning("reply %s is urgent but clinic.on_call_phone and clinic.alerts_email "
                    "are not set: nobody was alerted", reply.id)
    return queued


def escalate(db: DbSession, settings: Settings, now: datetime) -> int:
    """Alert again about urgent replies still open `triage.escalate_after_minutes` after the
    last alert; returns how many replies were escalated."""
    if not (settings.clinic.on_call_phone or settings.clinic.alerts_email):
        return 0  # nobody to escalate to (said once, when the reply arrived)
    every = timedelta(minutes=settings.triage.escalate_after_minutes)
    escalated = 0
    for reply in db.exec(select(Reply).where(Reply.triage == TriageLevel.URGENT,
                                             Reply.status == ReplyStatus.OPEN)).all():
        alerts = list(db.exec(select(Notice).where(
            Notice.reply_id == reply.id,
            col(Notice.kind).in_([NoticeKind.ALERT, NoticeKind.ESCALATION]))).all())
        rounds = len({a.created_at for a in alerts if a.kind == NoticeKind.ESCALATION})
        last = max((a.created_at for a in alerts), default=reply.received_at)
        if rounds >= MAX_ESCALATIONS or now < last + every:
            continue
        patient = db.get(Patient, reply.patient_id) if reply.patient_id else None
        if alert_on_call(db, settings, reply, patient, now, NoticeKind.ESCALATION):
            escalated += 1
            if reply.patient_id is not None:
                record(db, now, "reply.escalated", reply.patient_id, f"reply {reply.id}")
    return escalated


def queue_staff_reply(db: DbSession, patient: Patient, text: str, now: datetime, *,
                      request_key: str | None = None) -> Notice:
    """Queue staff's own SMS to a patient (kept in the conversation); sent at once.

    With `request_key` (one per form shown), the same form submitted again returns the
    notice of the first submission instead of texting the patient twice.
    """
    if request_key is not None:
        earlier = db.exec(select(Notice).where(Notice.request_key == request_key)).first()
        if earlier is not None:
            return earlier
    body = text.strip()
    if not body:
        raise UserError("text", "must not be empty")
    if len(body) > 1600:
        raise UserError("text", "is longer than 1600 characters (10 SMS segments)")
    why = patient.unreachable_reason("sms")
    if why is not None:
        raise UserError("patient", f"patient {patient.id} cannot get SMS: {why}")
    try:
        # A savepoint: the same form posted twice at once, the second insert loses here.
        with db.begin_nested():
            notice = _queue(db, NoticeKind.STAFF_REPLY, "sms", patient.phone, now, body=body,
                            patient=patient, staff=actor_of(db)[:100], request_key=request_key)
    except IntegrityError:
        earlier = db.exec(select(Notice).where(Notice.request_key == request_key)).first()
        if request_key is None or earlier is None:
            raise
        return earlier
    record(db, now, "reply.sent", patient.id or 0, "staff reply")
    return notice


def queue_answer(db: DbSession, reply: Reply, answer: str, now: datetime) -> Notice:
    """An automatic answer that cannot ride on a webhook's response (poll mode)."""
    return _queue(db, NoticeKind.STAFF_REPLY, "sms", reply.from_number, now, body=answer,
                  reply=reply, staff="aftercare")


def send_due(app: App, rng: random.Random | None = None) -> NoticeCounts:
    """Send every notice due now, one compare-and-swap claim each."""
    rng = rng or random.Random()
    counts = NoticeCounts()
    with app.db() as db:
        due = list(db.exec(select(Notice.id).where(
            Notice.status == NoticeStatus.PENDING, Notice.send_after <= app.clock())
            .order_by(col(Notice.id))).all())
    for notice_id in due:
        outcome = send_one(app, notice_id, rng)
        if outcome is not None:
            setattr(counts, outcome, getattr(counts, outcome) + 1)
    return counts


def send_one(app: App, notice_id: int | None, rng: random.Random) -> str | None:
    """Claim one notice (if still pending), send it, record the outcome."""
    now = app.clock()
    with app.db() as db:
        # Compare-and-swap: only one sender moves it from pending to sending.
        claimed = db.exec(update(Notice).where(col(Notice.id) == notice_id,
                                               col(Notice.status) == NoticeStatus.PENDING)
                          .values(status=NoticeStatus.SENDING, claimed_at=now,
                                  attempts=Notice.attempts + 1)).rowcount
        notice = db.get(Notice, notice_id)
    if claimed != 1 or notice is None:
        return None
    assert notice.id is not None
    # An alert goes to the clinic: it must not carry the patient's unsubscribe link.
    to_patient = notice.kind == NoticeKind.STAFF_REPLY
    outgoing = Outgoing(message_id=notice.id, channel=notice.channel,
                        to=notice.to_address or "", patient_name="",
                        timezone=app.settings.clinic.timezone, step=f"notice.{notice.kind}",
                        text=notice.body or "", subject=notice.subject, at=now,
                        patient_id=notice.patient_id if to_patient else None)
    try:
        provider_id = app.channels[notice.channel].send(outgoing)
    except SendError as exc:
        return _failed(app, notice, exc, rng)
    except Exception as exc:
        log.error("notice %s: unexpected %s from channel %s", notice.id, type(exc).__name__,
                  notice.channel)
        return _failed(app, notice, SendError(repr(exc), permanent=False), rng)
    with app.db() as db:
        db.exec(update(Notice).where(col(Notice.id) == notice.id)
                .values(status=NoticeStatus.SENT, sent_at=app.clock(), provider_id=provider_id,
                        last_error=None))
    log.info("notice %s (%s/%s): sent", notice.id, notice.kind, notice.channel)
    count_notice(notice.kind, "sent")
    return "sent"


def sent_or_queued(app: App, notice_id: int | None, rng: random.Random) -> str:
    """Send a queued notice now if nobody else is: "sent", "retrying", "failed", or, when
    another request already has it (the same form posted twice), where that one stands."""
    outcome = send_one(app, notice_id, rng)
    if outcome is not None:
        return outcome
    with app.db() as db:
        notice = db.get(Notice, notice_id)
    return notice.status if notice is not None else NoticeStatus.PENDING


def recover_stale(app: App) -> int:
    """Notices left `sending` by a sender that died go back to pending after the lease
    (at least once: an alert twice beats an alert lost)."""
    lease = timedelta(seconds=app.settings.daemon.lease_seconds)
    with app.db() as db:
        return int(db.exec(update(Notice).where(col(Notice.status) == NoticeStatus.SENDING,
                                                col(Notice.claimed_at) < app.clock() - lease)
                           .values(status=NoticeStatus.PENDING, claimed_at=None)).rowcount)


def _failed(app: App, notice: Notice, exc: SendError, rng: random.Random) -> str:
    now = app.clock()
    limit = getattr(app.settings, notice.channel).max_attempts
    retry = exc.retryable(notice.attempts, limit)
    error = exc.describe()
    with app.db() as db:
        db.exec(update(Notice).where(col(Notice.id) == notice.id).values(
            status=NoticeStatus.PENDING if retry else NoticeStatus.FAILED, last_error=error,
            claimed_at=None, send_after=now + retry_delay(app.settings, notice.attempts, rng)))
        if exc.consequence and notice.kind == NoticeKind.STAFF_REPLY and notice.patient_id:
            # The patient's route closed (STOP, invalid number): the same rule as any send.
            patient = db.get(Patient, notice.patient_id, with_for_update=True)
            if patient is not None:
                close_route(db, app.planner(), patient, exc.consequence,
                            f"provider error {exc.code}" if exc.code else "provider refusal")
    log.warning("notice %s (%s/%s): %s: %s", notice.id, notice.kind, notice.channel,
                "retrying" if retry else "failed", error)
    count_notice(notice.kind, "retrying" if retry else "failed")
    return "retrying" if retry else "failed"


def _queue(db: DbSession, kind: str, channel: str, to: str | None, now: datetime, *,
           body: str, subject: str | None = None, reply: Reply | None = None,
           patient: Patient | None = None, staff: str | None = None,
           request_key: str | None = None) -> Notice:
    notice = Notice(kind=kind, channel=channel, to_address=to, body=body, subject=subject,
                    reply_id=reply.id if reply else None,
                    patient_id=patient.id if patient else (reply.patient_id if reply else None),
                    send_after=now, created_at=now, staff=staff, request_key=request_key)
    db.add(notice)
    db.flush()
    return notice


def _who(patient: Patient | None, reply: Reply) -> str:
    if patient is None:
        return "an unknown number"
    return f"patient {patient.ref or '#' + str(patient.id)} ({patient.name})"


def run_once(app: App) -> NoticeCounts:
    """One round of the sender's notice job: settle stale claims, escalate, send."""
    recover_stale(app)
    with app.db() as db:
        escalate(db, app.settings, app.clock())
    return send_due(app)
