"""Dispatch: claim due message rows, check them again, send, record the outcome."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Update, bindparam, update
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare import metrics
from aftercare.channels import Channel, Outgoing
from aftercare.channels.rate_limit import Pace
from aftercare.clock import Clock, system_clock, zone
from aftercare.config import Settings
from aftercare.errors import SendError, UserError
from aftercare.history import record
from aftercare.models import (
    ACCEPTED,
    Course,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.planning import Planner, replan, why_unwanted
from aftercare.protocols import ProtocolBook
from aftercare.queries import AnySession, SessionRow, neighbour_session, sessions_of_courses
from aftercare.rendering import Rendered, Renderer, message_context

log = logging.getLogger(__name__)

SETUP_RETRY_SECONDS = 300
# While sends prove this fast (by the app's clock), several messages share one transaction
# for their check and renewal, and outcomes are written with the next transaction: a
# commit costs SQLite an fsync (~1-2 ms), more than a console send. A crash then leaves at
# most this much sending unrecorded, for recovery to settle as it settles any interruption.
GROUP_SECONDS = 0.05


_COUNTING = threading.Lock()


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

    def add(self, outcome: str | None, n: int = 1) -> None:
        """Count `n` of `outcome` (None: nothing); safe from the pass's worker threads."""
        if outcome is not None and n:
            with _COUNTING:
                setattr(self, outcome, getattr(self, outcome) + n)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


@dataclass(frozen=True)
class Claim:
    """A row this sender holds in `sending`; every later write to it is guarded by `token`."""

    message_id: int
    token: str
    channel: str
    patient_id: int | None = None  # a group never holds two messages of one patient


@dataclass
class _Loaded:
    """What a group of messages is judged on, read together: their patients (locked),
    courses, each course's sessions in time order, and who already had an SMS."""

    patients: dict[int, Patient]
    courses: dict[int, Course]
    sessions: dict[int, list[SessionRow]]
    had_sms: set[int]


@dataclass
class _Sent:
    """A send that succeeded, not yet written: written with the next transaction."""

    claim: Claim
    provider_id: str
    at: datetime


@dataclass
class Dispatcher:
    """Sends what is due. Several may share a database: each claim owns its rows.

    One pass runs at a time per instance; the clock is the app's one clock, read afresh for
    every message so a long pass never judges a message on the time it started.
    """

    engine: Engine
    settings: Settings
    protocols: ProtocolBook
    renderer: Renderer
    channels: Mapping[str, Channel]
    rng: random.Random = field(default_factory=random.Random)
    clock: Clock = system_clock
    # Tokens of this instance's claims in flight: its own recovery leaves them alone.
    _live: set[str] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # The slowest send of the pass in flight, by the app's clock (None: none yet).
    _slowest: timedelta | None = field(default=None, init=False, repr=False)

    def run_once(self, stop: threading.Event | None = None) -> DispatchCounts:
        """Send everything due, batch by batch, until nothing is left or `stop` is set.

        Channels that send several at once (`Channel.concurrency`) send through worker
        threads of this pass, fed claim after claim; the others are sent here, in order.
        Returns once every send started is recorded and every claim not started given back.
        """
        counts = DispatchCounts()
        self._slowest = None
        board = _Board(self, counts, stop)
        sent: list[_Sent] = []  # sends of the last group, written with the next claim
        try:
            while not board.stopping():
                if sent and not board.has_room():
                    # The next claim waits for the workers: the last group's sends are
                    # written now, not then.
                    counts.add("sent", self._write_sent_safely(sent))
                    sent = []
                # Claim again once the workers are nearly out of work: they never idle
                # between claims, and no claim waits long for a worker.
                if not board.wait_for_room():
                    break
                claims = self.claim(self.batch_limit(), sent=sent)
                counts.add("sent", _recorded(sent))
                sent = []
                if not claims:
                    break
                token = claims[0].token
                pooled = [c for c in claims if self.channels[c.channel].concurrency > 1]
                here = [c for c in claims if self.channels[c.channel].concurrency <= 1]
                board.add(token, pooled, here=bool(here))
                if here:
                    try:
                        sent = self._send_claims(here, counts, stop)
                    finally:
                        board.finish(token)
        except BaseException:
            board.halt()  # e.g. Ctrl-C: the workers start nothing more
            raise
        finally:
            try:
                board.close()  # waits for the sends in flight; gives back what was not started
            finally:
                counts.add("sent", self._write_sent_safely(sent))
        if counts.total:
            log.info("dispatch: %s", " ".join(f"{k}={v}" for k, v in counts.as_dict().items()))
        return counts

    def close(self) -> None:
        """Let the channels go of the connections they keep between sends (shutdown)."""
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception as exc:
                log.warning("channel %s: closing failed (%s)", channel.name, type(exc).__name__)

    def batch_limit(self) -> int:
        """How many rows one claim may take: as many as every channel can send within half a
        lease even if every send takes its whole timeout (`concurrency` at a time), and whose
        turn at a paced channel's rate comes within a quarter lease, so no row waits out its
        lease. A channel that never touches the network (`offline`) has no timeout to wait
        out: it leaves the claim at `daemon.batch_size`."""
        lease = self.settings.daemon.lease_seconds
        limit = float(self.settings.daemon.batch_size)
        for name, channel in self.channels.items():
            # Declared by the channels that are (ConsoleChannel); any other may hang on a
            # provider for its whole timeout.
            if not channel.offline:
                section = getattr(self.settings, name, None)
                timeout = getattr(section, "timeout_seconds", self.settings.longest_send_seconds)
                limit = min(limit, channel.concurrency * lease / 2 / timeout)
            if channel.pace is not None:
                # Other daemons share the rate: a longer wait renews the claim (`_wait_turn`).
                limit = min(limit, lease / 4 * channel.pace.rate / channel.max_cost)
        return max(1, int(limit))

    def _send_claims(self, claims: list[Claim], counts: DispatchCounts,
                     stop: threading.Event | None) -> list[_Sent]:
        """Check, send and record one claim's messages, in order, each judged at the time
        it is reached: one by one while sends are slow, in groups while they are fast.
        Returns the last group's sends, for the caller to write."""
        queue, sent = list(claims), list[_Sent]()
        count = counts.add
        try:
            while queue:
                if stop is not None and stop.is_set():
                    self._release(queue)
                    return sent
                group = self._next_group(queue)
                if len(group) == 1:
                    count("sent", self._write_sent_safely(sent))
                    sent = []
                    count(self._process_safely(group[0], stop))
                    continue
                try:
                    ready = self._prepare_group(group, sent, count)
                except Exception as exc:
                    # Nothing of that transaction was kept: write what was sent, then take
                    # the group one by one, where one message's error stays its own.
                    log.warning("dispatch: a group of %s failed to prepare (%s); one by one",
                                len(group), type(exc).__name__)
                    log.debug("dispatch: group error detail", exc_info=True)
                    count("sent", self._write_sent_safely(sent))
                    sent = []
                    queue[:0] = group[1:]
                    count(self._process_safely(group[0], stop))
                    continue
                sent = []
                for index, (claim, outgoing) in enumerate(ready):
                    if stop is not None and stop.is_set():
                        self._release([c for c, _ in ready[index:]] + queue)
                        return sent
                    result = self._send(claim, outgoing)
                    if isinstance(result, str):
                        sent.append(_Sent(claim, result, self.clock()))
                    else:
                        try:
                            count(self._record_failure(claim, result))
                        except Exception as exc:
                            log.error("message %s: tried, but recording the outcome failed "
                                      "(%s); recovery will settle it", claim.message_id,
                                      type(exc).__name__)
        except BaseException:
            count("sent", self._write_sent_safely(sent))
            raise
        return sent

    def _next_group(self, queue: list[Claim]) -> list[Claim]:
        """Take from `queue` the claims to judge together: one until a send was seen, then
        as many as the slowest send so far lets go within GROUP_SECONDS, never two of one
        patient (one's outcome may change the next: a closed route, a first SMS)."""
        size = 1
        if self._slowest is not None:
            size = int(GROUP_SECONDS / max(self._slowest.total_seconds(), 1e-4))
        group: list[Claim] = []
        patients: set[int | None] = set()
        # A paced channel's messages go one by one: each waits for its own slot.
        while queue and len(group) < size and queue[0].patient_id not in patients \
                and queue[0].patient_id is not None \
                and self.channels[queue[0].channel].pace is None:
            patients.add(queue[0].patient_id)
            group.append(queue.pop(0))
        return group or [queue.pop(0)]

    def _note_send(self, took: timedelta) -> None:
        with self._lock:  # the pass's workers send at once
            if self._slowest is None or took > self._slowest:
                self._slowest = took

    def _send(self, claim: Claim, outgoing: Outgoing) -> str | SendError:
        """One provider call: its id, or the SendError to record (unexpected errors too)."""
        channel = self.channels[claim.channel]
        started = self.clock()
        try:
            return metrics.timed_send(channel, outgoing)
        except SendError as exc:
            return exc
        except Exception as exc:
            # A bug or an unexpected library error: keep the message, retry later. Only the
            # type is logged at INFO and above; its text may carry an address.
            log.error("message %s: unexpected %s from channel %s", claim.message_id,
                      type(exc).__name__, channel.name)
            log.debug("message %s: channel error detail", claim.message_id, exc_info=True)
            return SendError(repr(exc), permanent=False)
        finally:
            self._note_send(self.clock() - started)

    def _prepare_group(self, group: list[Claim], sent: list[_Sent],
                       count: Callable[[str | None], None]) -> list[tuple[Claim, Outgoing]]:
        """One transaction: write the sends before it, then check, render and renew each
        claim of `group` (their patients, courses and sessions read together). Returns the
        messages to send; counts the ones that end here."""
        ready: list[tuple[Claim, Outgoing]] = []
        ended: list[str | None] = []
        # Nothing loaded here is read after the commit: expiring every patient, course and
        # session of the group at it would only cost time.
        with DbSession(self.engine, expire_on_commit=False) as db:
            self._write_sent(db, sent)
            held = _held_many(db, group)
            loaded = _load(db, list(held.values()))
            for claim in group:
                message = held.get(claim.message_id)
                if message is None:
                    ended.append(None)
                    continue
                now = self.clock()
                outcome = self._prepare(db, message, now, loaded)
                if isinstance(outcome, str):
                    _settle(message, outcome, now)
                    db.add(message)
                    log.debug("message %s (%s/%s): %s", message.id, message.step,
                              message.channel, outcome)
                    ended.append(outcome)
                    continue
                message.claimed_at = now  # renewed: the lease covers this send
                db.add(message)
                ready.append((claim, outcome))
            db.commit()
        for _ in range(_recorded(sent)):
            count("sent")
        for ending in ended:
            count(ending)
        return ready

    def _write_sent(self, db: DbSession, sent: list[_Sent]) -> None:
        """Record the sends in `sent` in the caller's transaction (compare-and-swap each);
        the caller reports them (`_recorded`) once it committed."""
        if not sent:
            return
        # Core statements on the session's connection: the ORM's UPDATE would compare each
        # against every row the transaction loaded.
        connection = db.connection()
        # The rows still held, locked in id order (as `_held_many` locks them): the one
        # statement below then writes exactly those, each still guarded by its claim. Per
        # row, a statement's own overhead cost more than its write.
        held = {(message_id, token) for message_id, status, token in connection.execute(
            select(Message.id, Message.status, Message.claim_token)
            .where(col(Message.id).in_([item.claim.message_id for item in sent]))
            .order_by(col(Message.id)).with_for_update())
            if status == MessageStatus.SENDING}
        mine = [item for item in sent if (item.claim.message_id, item.claim.token) in held]
        for item in sent:
            if (item.claim.message_id, item.claim.token) not in held:
                log.warning("message %s was sent but its claim had been taken over",
                            item.claim.message_id)
        if mine:
            connection.execute(_RECORD_SENT, [
                {"b_id": item.claim.message_id, "b_token": item.claim.token, "b_at": item.at,
                 "b_provider_id": item.provider_id} for item in mine])

    def _write_sent_safely(self, sent: list[_Sent]) -> int:
        """`_write_sent` in its own transaction: how many were written (errors leave the
        claims to recovery, as any outcome that could not be recorded)."""
        if not sent:
            return 0
        try:
            with DbSession(self.engine) as db:
                self._write_sent(db, sent)
                db.commit()
            return _recorded(sent)
        except Exception as exc:
            log.error("messages %s: sent, but recording it failed (%s); recovery will "
                      "settle them", [item.claim.message_id for item in sent],
                      type(exc).__name__)
            return 0

    def claim(self, limit: int, *, sent: list[_Sent] | None = None) -> list[Claim]:
        """Mark up to `limit` due rows as sending under a new token, committed before any
        network call (with the sends in `sent`, recorded in the same transaction)."""
        now, token = self.clock(), uuid.uuid4().hex
        with self._lock:
            self._live.add(token)
        try:
            claims = self._claim(now, token, limit, sent or [])
        except BaseException:
            # Whether or not the commit reached the database, no pass will end this claim:
            # its rows (if any) are left to recovery after their lease.
            with self._lock:
                self._live.discard(token)
            raise
        if not claims:
            with self._lock:
                self._live.discard(token)
        return claims

    def _claim(self, now: datetime, token: str, limit: int,
               sent: list[_Sent]) -> list[Claim]:
        with DbSession(self.engine) as db:
            self._write_sent(db, sent)
            # SKIP LOCKED lets several daemons share PostgreSQL without claiming the same row;
            # SQLite ignores it and relies on BEGIN IMMEDIATE (one writer at a time).
            rows = db.exec(
                select(Message.id, Message.channel, Message.patient_id)
                .where(Message.status == MessageStatus.PENDING, Message.send_after <= now)
                .order_by(col(Message.send_after), col(Message.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            ids = [row[0] for row in rows]
            if ids:
                # No status guard here: the rows are already ours (same IMMEDIATE transaction
                # on SQLite, row locks on PostgreSQL), and SQLite would plan `status = ?`
                # through the status index, walking every pending row instead of the ids.
                # The attempt counts from the claim, so a message that kills its sender
                # (a crash even before the send) still runs out of attempts; a claim given
                # back unstarted gives it back (`process`, `_release`).
                db.exec(update(Message)
                        .where(col(Message.id).in_(ids))
                        .values(status=MessageStatus.SENDING, claim_token=token, claimed_at=now,
                                attempts=Message.attempts + 1, updated_at=now))
            db.commit()
        return [Claim(message_id, token, channel, patient_id)
                for message_id, channel, patient_id in rows if message_id is not None]

    def process(self, claim: Claim, stop: threading.Event | None = None) -> str | None:
        """Check, render and send one claimed message; the outcome's name, or None when the
        claim is no longer this sender's (another took the row over after its lease) or was
        given back unstarted (`stop` set while it waited for its turn at the rate)."""
        now = self.clock()
        pace = self.channels[claim.channel].pace
        with DbSession(self.engine) as db:
            # Checking the token and renewing the claim below is one compare-and-swap.
            message = _held(db, claim)
            if message is None:
                return None
            outcome = self._prepare(db, message, now)
            if isinstance(outcome, str):
                _settle(message, outcome, now)
                db.add(message)
                db.commit()
                log.debug("message %s (%s/%s): %s", message.id, message.step, message.channel,
                          outcome)
                return outcome
            # Renew the claim: the lease covers this send, counted from now.
            message.claimed_at = now
            db.add(message)
            # The slot at the rate is taken in this transaction: only a message that goes
            # takes one, and taking it costs no commit of its own.
            wait = 0.0 if pace is None else pace.reserve(
                self.channels[claim.channel].cost(outcome), db)
            db.commit()  # end the transaction before the network call: SQLite must not stay locked
        if pace is not None:
            if not self._wait_turn(claim, pace, wait, stop):
                return None
            outcome = replace(outcome, paced=True)
        result = self._send(claim, outcome)
        try:
            if isinstance(result, str):
                return self._record_sent(claim, result)
            return self._record_failure(claim, result)
        except Exception as exc:
            # The send happened (or was tried) but its outcome could not be recorded:
            # retrying now could send it twice. The claim stays; after its lease, recovery
            # asks the provider (adopting what it has) and otherwise sends it again.
            log.error("message %s: sent or tried, but recording the outcome failed (%s); "
                      "recovery will settle it", claim.message_id, type(exc).__name__)
            return None

    def _wait_turn(self, claim: Claim, pace: Pace, seconds: float,
                   stop: threading.Event | None) -> bool:
        """Sleep until the message's slot at its channel's rate. False when it must not be
        sent after all: `stop` was set meanwhile (the claim is given back, unstarted), or a
        long wait let another sender take the claim over."""
        pace.pause(seconds, stop)
        if stop is not None and stop.is_set():
            self._release([claim])
            return False
        if seconds > self.settings.daemon.lease_seconds / 4:
            # Several daemons share the rate, so a turn can be long in coming: renew the
            # claim (compare-and-swap) so the send is covered by a lease from now on.
            now = self.clock()
            with DbSession(self.engine) as db:
                renewed = db.exec(_guarded(claim).values(claimed_at=now, updated_at=now))
                db.commit()
            if renewed.rowcount != 1:
                log.warning("message %s: claim taken over while waiting %.0f s for its turn "
                            "at the rate; left to its new sender", claim.message_id, seconds)
                return False
        return True

    def _process_safely(self, claim: Claim, stop: threading.Event | None = None) -> str | None:
        """`process`, with one message's unexpected error kept from ending the pass."""
        try:
            return self.process(claim, stop)
        except Exception as exc:
            log.error("message %s: unexpected %s while dispatching; retried later",
                      claim.message_id, type(exc).__name__)
            log.debug("message %s: error detail", claim.message_id, exc_info=True)
            try:
                return self._record_failure(claim, SendError(
                    f"internal error: {type(exc).__name__}", permanent=False))
            except Exception:
                # The database itself is failing: the claim stays; recovery settles it later.
                log.error("message %s: cannot record the error either", claim.message_id)
                return None

    def _prepare(self, db: DbSession, message: Message, now: datetime,
                 loaded: _Loaded | None = None) -> Outgoing | str:
        """The message rendered and addressed, or the outcome that replaces sending it.

        `loaded`: its patient (locked), course and sessions read beforehand with others'.
        """
        sessions: list[SessionRow] | None = None
        session: AnySession | None
        if loaded is None:
            patient = _patient_locked(db, message)
            course = db.get(Course, message.course_id)
            session = db.get(Session, message.session_id)
        else:
            patient = loaded.patients[message.patient_id]
            course = loaded.courses.get(message.course_id)
            sessions = loaded.sessions.get(message.course_id, [])
            session = next((s for s in sessions if s.id == message.session_id), None)
        assert patient is not None and course is not None and session is not None
        planner = Planner.from_settings(self.settings, self.protocols, self.clock)
        reason = why_unwanted(db, planner, message, patient, course, session, sessions=sessions)
        if reason is not None:
            message.status, message.last_error = MessageStatus.CANCELLED, reason[:500]
            db.add(message)
            record(db, now, "message.cancelled", patient.id,
                   f"{message.step}/{message.channel}: {reason} (found at send time)",
                   course_id=course.id, session_id=session.id, message_id=message.id)
            # A change this claim outlived (e.g. a route closed): the plan follows it, by
            # the same rule as any change, e.g. email standing in where consented.
            replan(db, planner, course, reason)
            return "cancelled"
        allowed = self.settings.messaging.quiet_hours.send_time(
            now, message.expires_at, zone(patient.timezone))
        if allowed is None:
            message.status = MessageStatus.EXPIRED
            message.last_error = ("found due after its validity window" if now >= message.expires_at
                                  else "validity window ends inside quiet hours")
            return "expired"
        if allowed > now:
            message.status, message.send_after = MessageStatus.PENDING, allowed
            return "deferred"
        from jinja2 import TemplateError  # here, not at import: an idle pass renders nothing

        try:
            rendered = self._render(db, message, patient, course, session, loaded)
        except (TemplateError, UserError) as exc:
            message.status, message.last_error = MessageStatus.FAILED, f"cannot render: {exc}"[:500]
            log.error("message %s: cannot render %s/%s: %s", message.id, message.step,
                      message.channel, exc)
            return "failed"
        to = patient.phone if message.channel == "sms" else patient.email
        assert to is not None and message.id is not None
        # Stored before the network call: recovery after a crash recognises it at the provider.
        message.body, message.subject = rendered.text, rendered.subject
        return Outgoing(message_id=message.id, channel=message.channel, to=to,
                        patient_name=patient.name, timezone=patient.timezone,
                        step=message.step, text=rendered.text, subject=rendered.subject,
                        html=rendered.html, at=now, patient_id=patient.id)

    def _render(self, db: DbSession, message: Message, patient: Patient, course: Course,
                session: AnySession, loaded: _Loaded | None = None) -> Rendered:
        protocol = self.protocols.get(course.treatment)
        step = protocol.step(message.step)

        def neighbour(status: str, later: bool) -> AnySession | None:
            if loaded is None:
                return neighbour_session(db, session, status, later=later)
            return _neighbour(loaded.sessions[course.id or 0], session, status, later=later)

        # Aftercare, nudges and maintenance are anchored on a completed session already.
        done: AnySession | None = session
        next_session: AnySession | None = None
        if step.anchor == "next_session":
            done = neighbour(SessionStatus.COMPLETED, later=False)
            # A reminder of a booked session speaks of it and of the last session done.
            next_session, session = session, done or session
        elif step.anchor == "session":
            next_session = neighbour(SessionStatus.BOOKED, later=True)
        if loaded is not None:
            first_sms = message.channel == "sms" and patient.id not in loaded.had_sms
        else:
            first_sms = message.channel == "sms" and db.exec(
                select(Message.id).where(Message.patient_id == patient.id,
                                         Message.channel == "sms",
                                         col(Message.status).in_(ACCEPTED)).limit(1)
            ).first() is None
        context = message_context(self.settings.clinic, patient, protocol, course, session,
                                  next_session, first_sms=first_sms, first_visit=done is None,
                                  occurrence=message.occurrence)
        return self.renderer.render(patient.locale, message.step, message.channel, context)

    def _record_sent(self, claim: Claim, provider_id: str) -> str:
        now = self.clock()
        with DbSession(self.engine) as db:
            # Compare-and-swap on the claim: a row another sender took over is no longer ours
            # and must not be overwritten.
            result = db.exec(_guarded(claim).values(
                status=MessageStatus.SENT, sent_at=now, provider_id=provider_id, last_error=None,
                claim_token=None, updated_at=now))
            db.commit()
        if result.rowcount != 1:
            log.warning("message %s was sent but its claim had been taken over", claim.message_id)
        log.debug("message %s (%s): sent", claim.message_id, claim.channel)
        metrics.count_send(claim.channel, "sent")
        return "sent"

    def _record_failure(self, claim: Claim, exc: SendError) -> str | None:
        """Record a failed try (the claim counted it): retry later, or fail for good."""
        now = self.clock()
        error = exc.describe()
        with DbSession(self.engine) as db:
            message = _held(db, claim)  # locked and checked: a compare-and-swap on the claim
            if message is None:
                return None
            retry = exc.retryable(message.attempts,
                                  getattr(self.settings, claim.channel).max_attempts)
            message.last_error, message.updated_at = error, now
            if exc.unknown_outcome:
                # Keep the claim: once its lease runs out, recovery asks the provider whether
                # the message arrived and adopts it, and only otherwise sends it again.
                retry = True
            else:
                message.claim_token = message.claimed_at = None
                if exc.setup_problem:
                    # Not this message's fault: it keeps its attempts and waits for the fix.
                    message.status, message.attempts = MessageStatus.PENDING, message.attempts - 1
                    message.send_after = now + timedelta(seconds=min(
                        SETUP_RETRY_SECONDS, self.settings.daemon.retry_max_seconds))
                    retry = True
                elif retry:
                    message.status = MessageStatus.PENDING
                    message.send_after = now + self.backoff(message.attempts)
                else:
                    message.status = MessageStatus.FAILED
            db.add(message)
            if exc.consequence:
                from aftercare.patients import close_route  # rare: keep it off the start

                patient = _patient_locked(db, message)
                planner = Planner.from_settings(self.settings, self.protocols, self.clock)
                close_route(db, planner, patient, exc.consequence,
                            f"provider error {exc.code}" if exc.code else "provider refusal")
                log.warning("patient %s: %s; the plan follows", patient.id, exc.consequence)
            attempts = message.attempts
            db.commit()
        outcome = "retrying" if retry else "failed"
        log.warning("message %s (%s): %s after attempt %s: %s", claim.message_id, claim.channel,
                    outcome, attempts, error)
        metrics.count_send(claim.channel, outcome)
        return outcome

    def backoff(self, attempts: int) -> timedelta:
        """Exponential delay before the next attempt, with jitter so retries spread out."""
        return retry_delay(self.settings, attempts, self.rng)

    def _release(self, claims: list[Claim]) -> None:
        """Give back claims not started (shutdown): they were never attempted."""
        with DbSession(self.engine) as db:
            for claim in claims:
                # Guarded: a row another sender took over meanwhile stays with it.
                db.exec(_guarded(claim).values(status=MessageStatus.PENDING, claim_token=None,
                                               claimed_at=None, attempts=Message.attempts - 1))
            db.commit()

    def recover_stale(self) -> int:
        """Settle rows whose claim outlived its lease (their sender died mid-send).

        Claims of this instance's pass in flight are left alone. An SMS the provider already
        accepted is adopted, not sent again; one it cannot vouch for right now stays claimed
        until the next round. A row interrupted as often as its channel allows attempts is
        failed, so one message that crashes the sender cannot block the queue forever.
        Returns how many rows went back to pending.
        """
        with self._lock:
            live = set(self._live)
        now = self.clock()
        lease = timedelta(seconds=self.settings.daemon.lease_seconds)
        with DbSession(self.engine) as db:
            stale = [(message, patient) for message, patient in db.exec(
                select(Message, Patient)
                .join(Patient, col(Patient.id) == Message.patient_id)
                .where(Message.status == MessageStatus.SENDING,
                       col(Message.claimed_at) < now - lease)
                .order_by(col(Message.claimed_at), col(Message.id))).all()
                if message.claim_token not in live]
        outcomes: Counter[str] = Counter()
        for message, patient in stale:
            try:
                outcome = self._settle_stale(message, patient, now)
            except Exception as exc:
                # One row's trouble (its database write, the provider's client) must not
                # keep the rows after it unsettled: they are tried now, it next round.
                log.error("message %s: settling the interrupted send failed (%s); tried again "
                          "next round", message.id, type(exc).__name__)
                log.debug("message %s: error detail", message.id, exc_info=True)
                continue
            if outcome is not None:
                outcomes[outcome] += 1
        if stale:
            log.warning("interrupted sends: %s adopted, %s requeued, %s failed",
                        outcomes["adopted"], outcomes["requeued"], outcomes["failed"])
        return outcomes["requeued"]

    def _settle_stale(self, message: Message, patient: Patient, now: datetime) -> str | None:
        """Adopt, requeue or fail one row whose claim outlived its lease; what was done, or
        None when the provider cannot tell yet (asked again next round)."""
        try:
            provider_id = self._already_sent(message, patient)
        except SendError as exc:
            log.warning("message %s: cannot ask the provider whether it was sent (%s); "
                        "will ask again", message.id, exc.reason)
            return None
        if provider_id is not None:
            values: dict[str, object] = {"status": MessageStatus.SENT, "sent_at": now,
                                         "provider_id": provider_id,
                                         "last_error": "adopted after an interrupted send"}
            outcome = "adopted"
        elif message.attempts >= getattr(self.settings, message.channel).max_attempts:
            values = {"status": MessageStatus.FAILED,
                      "last_error": f"send interrupted {message.attempts} times"}
            outcome = "failed"
        else:
            values = {"status": MessageStatus.PENDING}
            outcome = "requeued"
        with DbSession(self.engine) as db:
            # Compare-and-swap on the claim as it was seen stale: a sender that renewed
            # it meanwhile (its send started after all) keeps it.
            done = db.exec(update(Message)
                           .where(col(Message.id) == message.id,
                                  col(Message.status) == MessageStatus.SENDING,
                                  _same(Message.claim_token, message.claim_token),
                                  col(Message.claimed_at) == message.claimed_at)
                           .values(claim_token=None, claimed_at=None, updated_at=now, **values))
            db.commit()
        return outcome if done.rowcount == 1 else None

    def _already_sent(self, message: Message, patient: Patient) -> str | None:
        """The provider's id if it accepted this message before the interruption."""
        to = patient.phone if message.channel == "sms" else patient.email
        if not message.body or message.claimed_at is None or not to:
            return None
        return self.channels[message.channel].find_sent(to, message.body, message.claimed_at)


class _Board:
    """One pass's claims for the channels that send several at once, and their workers
    (`Channel.concurrency` threads a channel, for the pass): each worker takes the next
    claim of its channel whose patient has nothing in flight and no earlier claim waiting
    (one message's outcome may change the next: a closed route, a first SMS), until the
    pass ends or stops."""

    def __init__(self, dispatcher: Dispatcher, counts: DispatchCounts,
                 stop: threading.Event | None) -> None:
        self.dispatcher, self.counts, self.stop = dispatcher, counts, stop
        self.changed = threading.Condition()
        self.waiting: dict[str, list[Claim]] = {}  # by channel, in claim order
        self.busy: set[int] = set()  # patients with a send in flight
        self.turns: dict[int, list[Claim]] = {}  # each patient's waiting claims, in order
        self.open: Counter[str] = Counter()  # claim token -> its parts not yet finished
        self.workers: list[threading.Thread] = []
        self.closed = self.halted = False
        self.error: BaseException | None = None  # what killed a worker (the pass stops)
        self.renewed = dispatcher.clock()  # when the waiting claims were last renewed

    def stopping(self) -> bool:
        return self.halted or self.error is not None or (
            self.stop is not None and self.stop.is_set())

    def has_room(self) -> bool:
        """Whether no channel has more claims waiting than it has workers."""
        channels = self.dispatcher.channels
        with self.changed:
            return all(len(queue) <= channels[name].concurrency
                       for name, queue in self.waiting.items())

    def wait_for_room(self) -> bool:
        """Wait until there is room (`has_room`); False if the pass stops meanwhile."""
        with self.changed:
            while not self.has_room():
                if self.stopping():
                    return False
                self.changed.wait(0.5)  # a timeout, to see `stop` (and beat the heartbeat)
                self.renew_waiting()
        return not self.stopping()

    def renew_waiting(self) -> None:
        """Every quarter lease, renew the claims still waiting for a worker: behind a rate
        shared with other daemons a claim can wait longer than its lease, and another
        sender's recovery would take it (an attempt spent on nothing)."""
        dispatcher = self.dispatcher
        now = dispatcher.clock()
        if (now - self.renewed).total_seconds() < dispatcher.settings.daemon.lease_seconds / 4:
            return
        self.renewed = now
        with self.changed:  # no worker takes one meanwhile: a started send keeps its time
            waiting = [claim for queue in self.waiting.values() for claim in queue]
            if not waiting:
                return
            try:
                with DbSession(dispatcher.engine) as db:
                    for claim in waiting:  # guarded: one another sender took stays its
                        db.exec(_guarded(claim).values(claimed_at=now, updated_at=now))
                    db.commit()
            except Exception as exc:
                log.error("renewing %s waiting claims failed (%s)", len(waiting),
                          type(exc).__name__)

    def add(self, token: str, claims: list[Claim], *, here: bool) -> None:
        """Hand `claims` (of `token`) to the workers; `here`: the pass sends the rest of that
        claim itself, and says so with `finish(token)`."""
        with self.changed:
            self.open[token] += len(claims) + here
            for claim in claims:
                if claim.channel not in self.waiting:
                    self.waiting[claim.channel] = []
                    self._start(claim.channel)
                self.waiting[claim.channel].append(claim)
                if claim.patient_id is not None:
                    self.turns.setdefault(claim.patient_id, []).append(claim)
            self.changed.notify_all()

    def finish(self, token: str) -> None:
        """One part of claim `token` is done: the last one takes the claim off the live ones
        (from then on, the process's own recovery may settle what is left of it)."""
        with self.changed:
            self.open[token] -= 1
            if self.open[token] <= 0:
                del self.open[token]
                with self.dispatcher._lock:
                    self.dispatcher._live.discard(token)
            self.changed.notify_all()

    def halt(self) -> None:
        """Start nothing more (the pass is ending on an error)."""
        with self.changed:
            self.halted = True
            self.changed.notify_all()

    def close(self) -> None:
        """Let the workers finish what they started, then give back what nobody started
        (the pass stopped) and raise what killed a worker, if anything did."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        for worker in self.workers:
            while worker.is_alive():
                worker.join(0.5)
                self.stopping()  # a long send in flight is not a stall: this beats
                self.renew_waiting()
        with self.changed:
            left = [claim for queue in self.waiting.values() for claim in queue]
            self.waiting.clear()
            self.turns.clear()
        if left:
            try:
                self.dispatcher._release(left)
            except Exception as exc:
                log.error("messages %s: giving back unstarted claims failed (%s); recovery "
                          "will settle them", [c.message_id for c in left], type(exc).__name__)
            for claim in left:
                self.finish(claim.token)
        if self.error is not None:
            raise self.error

    def _start(self, channel: str) -> None:
        for number in range(self.dispatcher.channels[channel].concurrency):
            worker = threading.Thread(target=self._work, args=(channel,), daemon=True,
                                      name=f"send-{channel}-{number}")
            self.workers.append(worker)
            worker.start()

    def _take(self, channel: str) -> Claim | None:
        """The next claim of `channel` whose patient is free; None once there is none left
        and none will come, or the pass stops."""
        with self.changed:
            while not self.stopping():
                queue = self.waiting[channel]
                for index, claim in enumerate(queue):
                    patient = claim.patient_id
                    if patient is None or (patient not in self.busy
                                           and self.turns[patient][0] is claim):
                        del queue[index]
                        if patient is not None:
                            self.busy.add(patient)
                            self.turns[patient].pop(0)
                            if not self.turns[patient]:
                                del self.turns[patient]
                        self.changed.notify_all()  # room for the next claim, maybe
                        return claim
                if self.closed and not queue:
                    return None
                self.changed.wait(0.5)
        return None

    def _work(self, channel: str) -> None:
        try:
            while (claim := self._take(channel)) is not None:
                try:
                    # Checks `stop` itself while waiting for the rate; a send started
                    # finishes and is recorded.
                    self.counts.add(self.dispatcher._process_safely(claim, self.stop))
                finally:
                    with self.changed:
                        if claim.patient_id is not None:
                            self.busy.discard(claim.patient_id)
                    self.finish(claim.token)
        except BaseException as exc:
            # The process is dying (or a bug escaped): the pass stops and raises it; the
            # claim in hand stays `sending`, for recovery after its lease.
            with self.changed:
                self.error = self.error or exc
                self.changed.notify_all()


def retry_delay(settings: Settings, attempts: int, rng: random.Random) -> timedelta:
    """Exponential delay before attempt `attempts + 1`, with jitter so retries spread out."""
    daemon = settings.daemon
    delay = min(daemon.retry_base_seconds * 2 ** (attempts - 1), daemon.retry_max_seconds)
    return timedelta(seconds=delay * rng.uniform(0.8, 1.2))


def _held(db: DbSession, claim: Claim) -> Message | None:
    """The claimed row, locked, if it is still in `sending` under this claim; else None."""
    # Locked on PostgreSQL (SQLite's IMMEDIATE transaction already is) and read afresh, so
    # recovery elsewhere cannot take the row between this check and the caller's write.
    message = db.get(Message, claim.message_id, with_for_update=True, populate_existing=True)
    if message is None or message.status != MessageStatus.SENDING \
            or message.claim_token != claim.token:
        log.warning("message %s: claim taken over by another sender; left to it",
                    claim.message_id)
        return None
    return message


def _recorded(sent: list[_Sent]) -> int:
    """Report sends whose record was committed (log, metrics); how many."""
    for item in sent:
        log.debug("message %s (%s): sent", item.claim.message_id, item.claim.channel)
        metrics.count_send(item.claim.channel, "sent")
    return len(sent)


def _held_many(db: DbSession, claims: list[Claim]) -> dict[int, Message]:
    """`_held` for a group of claims, in one query: the rows still held, by id."""
    by_id = {claim.message_id: claim for claim in claims}
    rows = db.exec(select(Message).where(col(Message.id).in_(list(by_id)))
                   .order_by(col(Message.id)).with_for_update()
                   .execution_options(populate_existing=True)).all()
    held: dict[int, Message] = {}
    for message in rows:
        claim = by_id[message.id or 0]
        if message.status == MessageStatus.SENDING and message.claim_token == claim.token:
            held[claim.message_id] = message
    for claim in claims:
        if claim.message_id not in held:
            log.warning("message %s: claim taken over by another sender; left to it",
                        claim.message_id)
    return held


def _load(db: DbSession, messages: list[Message]) -> _Loaded:
    """The patients (locked, in id order, read afresh), courses, sessions and past SMS of
    `messages`, in four queries whatever their number."""
    patient_ids = sorted({m.patient_id for m in messages})
    course_ids = sorted({m.course_id for m in messages})
    patients = {p.id or 0: p for p in db.exec(
        select(Patient).where(col(Patient.id).in_(patient_ids)).order_by(col(Patient.id))
        .with_for_update().execution_options(populate_existing=True)).all()}
    courses = {c.id or 0: c for c in db.exec(
        select(Course).where(col(Course.id).in_(course_ids))).all()}
    # Read, not tracked: nothing here changes a session (a re-plan reads its own).
    sessions = sessions_of_courses(db, course_ids)
    had_sms = set(db.exec(select(Message.patient_id).distinct().where(
        col(Message.patient_id).in_(patient_ids), Message.channel == "sms",
        col(Message.status).in_(ACCEPTED))).all())
    return _Loaded(patients, courses, sessions, had_sms)


def _neighbour(sessions: list[SessionRow], session: AnySession, status: str, *,
               later: bool) -> SessionRow | None:
    """`queries.neighbour_session` on a course's sessions already read (in time order)."""
    if later:
        return next((s for s in sessions if s.status == status and s.at > session.at), None)
    return next((s for s in reversed(sessions) if s.status == status and s.at < session.at),
                None)


def _settle(message: Message, outcome: str, now: datetime) -> None:
    """A claim that ends without a send: given back, its attempt too unless it failed."""
    if outcome in ("deferred", "expired", "cancelled"):
        message.attempts -= 1  # nothing was attempted
    message.claim_token = message.claimed_at = None
    message.updated_at = now


def _patient_locked(db: DbSession, message: Message) -> Patient:
    """The message's patient, locked and read afresh before any decision that may re-plan.

    On PostgreSQL two senders may close two routes of one patient at once (STOP on the
    SMS, a refused address on the email): the second must see the first one's flag, or its
    re-plan would revive messages on the route just closed. Locks go in one order: the
    sender's own row, the patient, then the rows replan may change (by id).
    """
    patient = db.get(Patient, message.patient_id, with_for_update=True, populate_existing=True)
    assert patient is not None
    return patient


_table = Message.__table__  # type: ignore[attr-defined]
# `_guarded` for many rows: one statement, compiled once, each send's values bound to it.
_RECORD_SENT = (update(Message)
                .where(col(Message.id) == bindparam("b_id", type_=_table.c.id.type),
                       col(Message.status) == MessageStatus.SENDING,
                       col(Message.claim_token) == bindparam("b_token",
                                                             type_=_table.c.claim_token.type))
                .values(status=MessageStatus.SENT,
                        sent_at=bindparam("b_at", type_=_table.c.sent_at.type),
                        provider_id=bindparam("b_provider_id", type_=_table.c.provider_id.type),
                        last_error=None, claim_token=None,
                        updated_at=bindparam("b_at", type_=_table.c.updated_at.type)))


def _guarded(claim: Claim) -> Update:
    """An UPDATE of the claimed row that changes nothing unless the claim is still ours."""
    return (update(Message)
            .where(col(Message.id) == claim.message_id,
                   col(Message.status) == MessageStatus.SENDING,
                   col(Message.claim_token) == claim.token))


def _same(column: Any, value: str | None) -> ColumnElement[bool]:
    """`column = value`, where NULL matches NULL (rows claimed before claim tokens)."""
    return col(column).is_(None) if value is None else col(column) == value
