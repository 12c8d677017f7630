"""Dispatch: claim due message rows, check them again, send, record the outcome."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from jinja2 import TemplateError
from sqlalchemy import Engine, update
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.channels import Channel, Outgoing
from aftercare.clock import Clock, system_clock, zone
from aftercare.config import Settings
from aftercare.errors import SendError, UserError
from aftercare.models import (
    Course,
    CourseStatus,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.protocols import ProtocolBook
from aftercare.reachability import close_route, email_instead
from aftercare.rendering import Rendered, Renderer, message_context

log = logging.getLogger(__name__)

SETUP_RETRY_SECONDS = 300


@dataclass
class DispatchCounts:
    """What one dispatch pass did, by outcome."""

    sent: int = 0
    failed: int = 0
    retrying: int = 0
    deferred: int = 0
    expired: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


@dataclass
class _Prepared:
    """A claimed message that passed its checks, rendered and addressed."""

    outgoing: Outgoing
    claimed_at: datetime
    attempts: int
    patient_id: int


@dataclass
class Dispatcher:
    """Sends what is due. One instance per process; safe to call from one thread at a time."""

    engine: Engine
    settings: Settings
    protocols: ProtocolBook
    renderer: Renderer
    channels: Mapping[str, Channel]
    rng: random.Random = field(default_factory=random.Random)
    clock: Clock = system_clock  # renews claims: a lease counts from each send, not the batch

    def run_once(self, stop: threading.Event | None = None) -> DispatchCounts:
        """Send everything due, batch by batch, until nothing is left or `stop` is set."""
        now = self.clock()
        counts = DispatchCounts()
        while stop is None or not stop.is_set():
            claimed = self.claim(now, self.settings.daemon.batch_size)
            if not claimed:
                break
            for index, message_id in enumerate(claimed):
                if stop is not None and stop.is_set():
                    self._release(claimed[index:])
                    break
                outcome = self.process(message_id, now)
                setattr(counts, outcome, getattr(counts, outcome) + 1)
        if counts.total:
            log.info("dispatch: %s", " ".join(f"{k}={v}" for k, v in counts.as_dict().items()))
        return counts

    def claim(self, now: datetime, limit: int) -> list[int]:
        """Mark up to `limit` due rows as sending, committed before any network call."""
        with DbSession(self.engine) as db:
            # SKIP LOCKED lets several daemons share PostgreSQL without claiming the same row;
            # SQLite ignores it and relies on BEGIN IMMEDIATE (one writer at a time).
            ids = list(db.exec(
                select(Message.id)
                .where(Message.status == MessageStatus.PENDING, Message.send_after <= now)
                .order_by(col(Message.send_after), col(Message.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all())
            if ids:
                # No status guard here: the rows are already ours (same IMMEDIATE transaction
                # on SQLite, row locks on PostgreSQL), and SQLite would plan `status = ?`
                # through the status index, walking every pending row instead of the ids.
                db.exec(update(Message)
                        .where(col(Message.id).in_(ids))
                        .values(status=MessageStatus.SENDING, claimed_at=now,
                                attempts=Message.attempts + 1, updated_at=now))
            db.commit()
        return [i for i in ids if i is not None]

    def process(self, message_id: int, now: datetime) -> str:
        """Check, render and send one claimed message; returns the outcome's name."""
        with DbSession(self.engine) as db:
            # Locked (PostgreSQL; SQLite's IMMEDIATE transaction already is) so recovery
            # cannot requeue the row between this check and the renewed claim below.
            message = db.get(Message, message_id, with_for_update=True)
            if message is None or message.status != MessageStatus.SENDING:
                return "cancelled"
            prepared = self._prepare(db, message, now)
            if isinstance(prepared, str):
                if prepared in ("deferred", "expired", "cancelled"):
                    # Nothing was attempted: the claim's attempt does not count.
                    message.attempts, message.claimed_at = message.attempts - 1, None
                message.updated_at = now
                db.add(message)
                db.commit()
                log.debug("message %s (%s/%s): %s", message.id, message.step, message.channel,
                          prepared)
                return prepared
            db.add(message)
            db.commit()  # end the transaction before the network call: SQLite must not stay locked
        channel = self.channels[prepared.outgoing.channel]
        try:
            provider_id = channel.send(prepared.outgoing)
        except SendError as exc:
            return self._record_failure(prepared, exc, now)
        except Exception as exc:
            # A bug or an unexpected library error: keep the message, retry later. Only the
            # type is logged at INFO and above; its text may carry an address.
            log.error("message %s: unexpected %s from channel %s", message_id,
                      type(exc).__name__, channel.name)
            log.debug("message %s: channel error detail", message_id, exc_info=True)
            return self._record_failure(prepared, SendError(repr(exc), permanent=False), now)
        return self._record_sent(prepared, provider_id, now)

    def _prepare(self, db: DbSession, message: Message, now: datetime) -> _Prepared | str:
        """The message ready to send, or the outcome that replaces sending it."""
        patient = db.get(Patient, message.patient_id)
        course = db.get(Course, message.course_id)
        session = db.get(Session, message.session_id)
        assert patient is not None and course is not None and session is not None
        reason = _why_not(patient, course, session, message.channel)
        if reason is None and self._superseded(db, course, session, message.step):
            reason = "a later session is booked or done"
        if reason is not None:
            if email_instead(db, patient, message, now):
                reason += "; sent by email instead"
            message.status, message.last_error = MessageStatus.CANCELLED, reason
            return "cancelled"
        if now >= message.expires_at:
            message.status = MessageStatus.EXPIRED
            message.last_error = "found due after its validity window"
            return "expired"
        tz = zone(patient.timezone)
        allowed = self.settings.messaging.quiet_hours.next_allowed(now, tz)
        if allowed > now:
            if allowed >= message.expires_at:
                message.status = MessageStatus.EXPIRED
                message.last_error = "validity window ends inside quiet hours"
                return "expired"
            message.status, message.send_after = MessageStatus.PENDING, allowed
            return "deferred"
        try:
            rendered = self._render(db, message, patient, course, session)
        except (TemplateError, UserError) as exc:
            message.status, message.last_error = MessageStatus.FAILED, f"cannot render: {exc}"[:500]
            log.error("message %s: cannot render %s/%s: %s", message.id, message.step,
                      message.channel, exc)
            return "failed"
        to = patient.phone if message.channel == "sms" else patient.email
        assert to is not None and message.id is not None
        outgoing = Outgoing(message_id=message.id, channel=message.channel, to=to,
                            patient_name=patient.name, timezone=patient.timezone,
                            step=message.step, text=rendered.text, subject=rendered.subject,
                            html=rendered.html, at=now)
        # Stored before the network call: recovery after a crash recognises it at the provider.
        message.body, message.subject = rendered.text, rendered.subject
        # Renew the claim: the lease covers this send, however long the batch took so far.
        message.claimed_at = self.clock()
        return _Prepared(outgoing, message.claimed_at, message.attempts, patient.id or 0)

    def _superseded(self, db: DbSession, course: Course, session: Session, step_key: str) -> bool:
        """Whether a step that only makes sense as the latest word has been overtaken."""
        try:
            step = self.protocols.get(course.treatment).step(step_key)
        except (UserError, KeyError):
            return False
        # Nudges to book and maintenance reminders are moot once a later visit exists,
        # whatever the protocol says (a claim that outlived the booking comes back here).
        if not (step.skip_if_later_session or step.anchor in ("rebooking", "maintenance")):
            return False
        return db.exec(select(Session.id).where(
            Session.course_id == course.id, Session.at > session.at,
            col(Session.status).in_([SessionStatus.BOOKED, SessionStatus.COMPLETED]))
        ).first() is not None

    def _render(self, db: DbSession, message: Message, patient: Patient, course: Course,
                session: Session) -> Rendered:
        protocol = self.protocols.get(course.treatment)
        step = protocol.step(message.step)
        # Aftercare, nudges and maintenance are anchored on a completed session already.
        done: Session | None = session
        next_session: Session | None = None
        if step.anchor == "next_session":
            done = db.exec(select(Session)
                           .where(Session.course_id == course.id, Session.at < session.at,
                                  Session.status == SessionStatus.COMPLETED)
                           .order_by(col(Session.at).desc())).first()
            # A reminder of a booked session speaks of it and of the last session done.
            next_session, session = session, done or session
        elif step.anchor == "session":
            next_session = db.exec(select(Session)
                                   .where(Session.course_id == course.id, Session.at > session.at,
                                          Session.status == SessionStatus.BOOKED)
                                   .order_by(col(Session.at))).first()
        first_sms = message.channel == "sms" and db.exec(
            select(Message.id).where(Message.patient_id == patient.id, Message.channel == "sms",
                                     Message.status == MessageStatus.SENT).limit(1)
        ).first() is None
        context = message_context(self.settings.clinic, patient, protocol, course, session,
                                  next_session, first_sms=first_sms, first_visit=done is None,
                                  occurrence=message.occurrence)
        return self.renderer.render(patient.locale, message.step, message.channel, context)

    def _record_sent(self, prepared: _Prepared, provider_id: str, now: datetime) -> str:
        out = prepared.outgoing
        with DbSession(self.engine) as db:
            # Compare-and-swap on the claim: if recovery re-queued this row meanwhile, the
            # row is no longer ours and must not be overwritten.
            result = db.exec(update(Message)
                             .where(col(Message.id) == out.message_id,
                                    col(Message.status) == MessageStatus.SENDING,
                                    col(Message.claimed_at) == prepared.claimed_at)
                             .values(status=MessageStatus.SENT, sent_at=now,
                                     provider_id=provider_id, last_error=None,
                                     updated_at=now))
            db.commit()
        if result.rowcount != 1:
            log.warning("message %s was sent but its claim had been taken over", out.message_id)
        log.debug("message %s (%s/%s): sent", out.message_id, out.step, out.channel)
        return "sent"

    def _record_failure(self, prepared: _Prepared, exc: SendError, now: datetime) -> str:
        out = prepared.outgoing
        limit = getattr(self.settings, out.channel).max_attempts
        retry = not exc.permanent and prepared.attempts < limit
        error = (f"{exc.code}: {exc.reason}" if exc.code else exc.reason)[:500]
        values: dict[str, object] = {"last_error": error, "updated_at": now, "claimed_at": None}
        if exc.setup_problem:
            # Not this message's fault: it keeps its attempts and waits for the fix.
            values |= {"status": MessageStatus.PENDING, "attempts": Message.attempts - 1,
                       "send_after": now + timedelta(seconds=min(
                           SETUP_RETRY_SECONDS, self.settings.daemon.retry_max_seconds))}
            retry = True
        elif exc.unknown_outcome:
            # Keep the claim: once its lease runs out, recovery asks the provider whether
            # the message arrived and adopts it, and only otherwise sends it again.
            values = {"last_error": error, "updated_at": now}
            retry = True
        elif retry:
            values |= {"status": MessageStatus.PENDING,
                       "send_after": now + self.backoff(prepared.attempts)}
        else:
            values |= {"status": MessageStatus.FAILED}
        with DbSession(self.engine) as db:
            result = db.exec(update(Message)
                             .where(col(Message.id) == out.message_id,
                                    col(Message.status) == MessageStatus.SENDING,
                                    col(Message.claimed_at) == prepared.claimed_at)
                             .values(**values))
            if result.rowcount == 1 and exc.consequence:
                patient, message = db.get(Patient, prepared.patient_id), db.get(Message, out.message_id)
                assert patient is not None and message is not None
                close_route(db, patient, exc.consequence, message, now)
                log.warning("patient %s: %s; pending %s messages moved or cancelled",
                            patient.id, exc.consequence, out.channel)
            db.commit()
        outcome = "retrying" if retry else "failed"
        log.warning("message %s (%s/%s): %s after attempt %s: %s", out.message_id, out.step,
                    out.channel, outcome, prepared.attempts, error)
        return outcome

    def backoff(self, attempts: int) -> timedelta:
        """Exponential delay before the next attempt, with jitter so retries spread out."""
        daemon = self.settings.daemon
        delay = min(daemon.retry_base_seconds * 2 ** (attempts - 1), daemon.retry_max_seconds)
        return timedelta(seconds=delay * self.rng.uniform(0.8, 1.2))

    def _release(self, ids: list[int]) -> None:
        """Give back claims not started (shutdown): they were never attempted."""
        with DbSession(self.engine) as db:
            # Only this process handled these claims and it never started them.
            db.exec(update(Message)
                    .where(col(Message.id).in_(ids))
                    .values(status=MessageStatus.PENDING, claimed_at=None,
                            attempts=Message.attempts - 1))
            db.commit()

    def recover_stale(self) -> int:
        """Settle rows whose claim outlived its lease (the process died mid-send).

        An SMS the provider already accepted is adopted, not sent again; one it cannot
        vouch for right now stays claimed until the next round. A row interrupted as often
        as its channel allows attempts is failed, so one message that crashes the sender
        cannot block the queue forever. Returns how many rows went back to pending.
        """
        now = self.clock()
        lease = timedelta(seconds=self.settings.daemon.lease_seconds)
        with DbSession(self.engine) as db:
            stale = db.exec(select(Message, Patient)
                            .join(Patient, col(Patient.id) == Message.patient_id)
                            .where(Message.status == MessageStatus.SENDING,
                                   col(Message.claimed_at) < now - lease)).all()
        requeued = adopted = failed = 0
        for message, patient in stale:
            try:
                provider_id = self._already_sent(message, patient)
            except SendError as exc:
                log.warning("message %s: cannot ask the provider whether it was sent (%s); "
                            "will ask again", message.id, exc.reason)
                continue
            if provider_id is not None:
                values: dict[str, object] = {"status": MessageStatus.SENT, "sent_at": now,
                                             "provider_id": provider_id,
                                             "last_error": "adopted after an interrupted send"}
                adopted += 1
            elif message.attempts >= getattr(self.settings, message.channel).max_attempts:
                values = {"status": MessageStatus.FAILED,
                          "last_error": f"send interrupted {message.attempts} times"}
                failed += 1
            else:
                values = {"status": MessageStatus.PENDING}
                requeued += 1
            with DbSession(self.engine) as db:
                db.exec(update(Message)
                        .where(col(Message.id) == message.id,
                               col(Message.status) == MessageStatus.SENDING,
                               col(Message.claimed_at) == message.claimed_at)
                        .values(claimed_at=None, updated_at=now, **values))
                db.commit()
        if stale:
            log.warning("interrupted sends: %s adopted, %s requeued, %s failed", adopted,
                        requeued, failed)
        return requeued

    def _already_sent(self, message: Message, patient: Patient) -> str | None:
        """The provider's id if it accepted this message before the interruption."""
        find_sent = getattr(self.channels.get(message.channel), "find_sent", None)
        if find_sent is None or not message.body or message.claimed_at is None:
            return None  # email: sent again under the same Message-ID
        return find_sent(patient.phone, message.body, message.claimed_at)


def _why_not(patient: Patient, course: Course, session: Session, channel: str) -> str | None:
    """Why a claimed message must not go out any more, or None."""
    if course.status == CourseStatus.WITHDRAWN:
        return "course withdrawn"
    if session.status == SessionStatus.CANCELLED:
        return "session cancelled"
    if session.status == SessionStatus.NO_SHOW:
        return "session missed"
    return patient.unreachable_reason(channel)
