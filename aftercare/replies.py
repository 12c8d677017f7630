"""Replies: what patients text back. Stored first, then acted on: keywords, triage, answers.

A reply is a row before anything is done about it, so a crash never loses one; the
provider's id makes the same webhook (or poll) twice one reply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.app import App
from aftercare.checkins import answer_of, flag_for_staff, mentions, open_question, record_answer
from aftercare.config import Settings
from aftercare.errors import UserError
from aftercare.history import record
from aftercare.metrics import count_reply
from aftercare.models import Patient, Reply, ReplyStatus, TriageLevel
from aftercare.notices import alert_on_call, queue_answer
from aftercare.patients import set_opt_out
from aftercare.planning import Planner
from aftercare.queries import get_by_id
from aftercare.rendering import Renderer, answer_context
from aftercare.triage import TriageRules, triage

log = logging.getLogger(__name__)

# Twilio's Advanced Opt-Out keywords: the whole message, any case, spaces around ignored.
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke",
                        "optout"})
START_WORDS = frozenset({"start", "unstop", "yes"})
HELP_WORDS = frozenset({"help", "info"})


@dataclass(frozen=True)
class Incoming:
    """One message as the provider hands it over."""

    provider_id: str
    from_number: str | None
    to_number: str | None
    body: str


def keyword_of(body: str) -> str | None:
    """"stop", "start" or "help" when the whole message is one of those keywords."""
    word = body.strip().casefold()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def store(db: DbSession, incoming: Incoming, now: datetime) -> Reply:
    """The reply for `incoming`, stored if new (the same provider id twice is one reply)."""
    known = db.exec(select(Reply).where(Reply.provider_id == incoming.provider_id)).first()
    if known is not None:
        return known
    patients = patients_by_phone(db, incoming.from_number)
    reply = Reply(provider_id=incoming.provider_id,
                  patient_id=patients[0].id if patients else None,
                  from_number=incoming.from_number, to_number=incoming.to_number,
                  body=incoming.body, received_at=now, keyword=keyword_of(incoming.body))
    db.add(reply)
    db.flush()
    count_reply(reply.keyword)
    return reply


def patients_by_phone(db: DbSession, phone: str | None) -> list[Patient]:
    """Patients (not forgotten) with this number, most recently added first."""
    if not phone:
        return []
    return list(db.exec(select(Patient).where(Patient.phone == phone,
                                              col(Patient.forgotten_at).is_(None))
                        .order_by(col(Patient.id).desc())).all())


def act(db: DbSession, planner: Planner, settings: Settings, renderer: Renderer,
        rules: TriageRules, reply: Reply) -> str | None:
    """Carry out what a stored reply asks for, once; the automatic answer, if any.

    A keyword changes consent through the same rule as the desk's opt-out or opt-in, for
    every patient with that number. Any other reply goes to the inbox with a triage level.
    Flushes, does not commit.
    """
    if reply.handled_at is not None:
        return reply.answer  # a webhook retried: the same answer, nothing done twice
    now = planner.clock()
    patients = patients_by_phone(db, reply.from_number)
    patient = patients[0] if patients else None
    answer: str | None = None
    if reply.keyword in ("stop", "start"):
        for each in patients:
            set_opt_out(db, planner, each, "sms", reply.keyword == "stop",
                        source=f"replied {(reply.body or '').strip().upper()}")
        reply.status = ReplyStatus.HANDLED
    elif reply.keyword == "help":
        reply.status = ReplyStatus.HANDLED
        if settings.sms.keyword_replies == "aftercare":
            answer = _answer(renderer, settings, patient, "help")
    else:
        locale = patient.locale if patient else settings.messaging.default_locale
        reply.triage = str(triage(reply.body or "", locale, rules).level)
        reply.status = ReplyStatus.OPEN
        if reply.triage == TriageLevel.URGENT:
            # First, before anything that reads the plan: the clinic hears of it whatever else.
            alert_on_call(db, settings, reply, patient, now)
            answer = _answer(renderer, settings, patient, "urgent")
        asked = open_question(db, planner.protocols, patient, now) if patient else None
        checkin = answer_of(asked.question, reply.body or "") if asked else None
        if reply.triage == TriageLevel.URGENT:
            pass
        elif asked is not None and checkin is not None:
            # An answer to the reminder's check-in: recorded on the session, answered in
            # kind; a flagging answer waits in the inbox for staff to call.
            if record_answer(db, asked, checkin, now):
                reply.triage = TriageLevel.REVIEW
            else:
                reply.status = ReplyStatus.CLOSED
            answer = _answer(renderer, settings, patient, f"{asked.question.key}_{checkin}")
        else:
            if asked is not None and mentions(asked.question, reply.body or ""):
                # It speaks of the subject without a plain answer ("the bruise is almost
                # gone"): the session is flagged for staff to read it, nothing is assumed.
                flag_for_staff(db, asked, now)
                reply.triage = TriageLevel.REVIEW
            if not _acknowledged_today(db, reply, now):
                answer = _answer(renderer, settings, patient, "acknowledge")
        if patient is not None:
            record(db, now, f"reply.{reply.triage}", patient.id, f"reply {reply.id}")
    reply.answer, reply.handled_at = answer, now
    db.add(reply)
    db.flush()
    log.info("reply %s: %s", reply.id, reply.keyword or reply.triage)
    return answer


def _answer(renderer: Renderer, settings: Settings, patient: Patient | None, name: str) -> str:
    locale = patient.locale if patient else settings.messaging.default_locale
    return renderer.answer(locale, name, answer_context(settings.clinic, patient))


def _acknowledged_today(db: DbSession, reply: Reply, now: datetime) -> bool:
    """Whether this number already got an acknowledgement in the last day (one a day)."""
    return db.exec(select(Reply.id).where(
        Reply.from_number == reply.from_number, Reply.id != reply.id,
        col(Reply.answer).is_not(None), col(Reply.keyword).is_(None),
        Reply.received_at > now - timedelta(days=1))).first() is not None


def find_reply(db: DbSession, ident: int) -> Reply:
    """The reply with id `ident`, or a UserError."""
    reply = get_by_id(db, Reply, ident)
    if reply is None:
        raise UserError("reply", f"no reply with id {ident}; see `aftercare inbox --all`")
    return reply


def inbox(db: DbSession, *, everything: bool = False) -> list[Reply]:
    """Replies waiting for staff (or all of them), urgent first, then oldest first."""
    query = select(Reply).where(col(Reply.keyword).is_(None))
    if not everything:
        query = query.where(col(Reply.status).in_([ReplyStatus.OPEN, ReplyStatus.ACKNOWLEDGED]))
    rows = list(db.exec(query.order_by(col(Reply.received_at), col(Reply.id))).all())
    rank = {"urgent": 0, "review": 1}
    return sorted(rows, key=lambda r: rank.get(r.triage or "", 2))


def acknowledge(db: DbSession, reply: Reply, now: datetime) -> None:
    """Someone has the reply in hand (stops escalation)."""
    if reply.status == ReplyStatus.OPEN:
        reply.status, reply.acknowledged_at = ReplyStatus.ACKNOWLEDGED, now
        db.add(reply)
        if reply.patient_id is not None:
            record(db, now, "reply.acknowledged", reply.patient_id, f"reply {reply.id}")


def retriage(db: DbSession, settings: Settings, reply: Reply, level: str, now: datetime) -> None:
    """Staff's own judgement of a reply's triage level replaces the matcher's; made urgent,
    it alerts the on-call contact at once, as an urgent reply would have."""
    if level not in {t.value for t in TriageLevel}:
        raise UserError("level", f"'{level}' is not a triage level; use urgent, review or routine")
    if reply.keyword is not None:
        raise UserError("reply", f"reply {reply.id} is the keyword {reply.keyword.upper()}: "
                        "nothing to triage")
    if reply.triage != level:
        if reply.patient_id is not None:
            record(db, now, "reply.retriaged", reply.patient_id,
                   f"reply {reply.id}: {reply.triage} -> {level}")
        reply.triage = level
        db.add(reply)
        if level == TriageLevel.URGENT and reply.status == ReplyStatus.OPEN:
            patient = db.get(Patient, reply.patient_id) if reply.patient_id else None
            alert_on_call(db, settings, reply, patient, now)


def close(db: DbSession, reply: Reply, now: datetime, note: str | None = None) -> None:
    """The reply needs nothing more."""
    if note is not None and len(note) > 500:
        raise UserError("note", "is longer than 500 characters")
    if reply.status != ReplyStatus.CLOSED:
        reply.status, reply.closed_at = ReplyStatus.CLOSED, now
        reply.acknowledged_at = reply.acknowledged_at or now
        reply.note = note
        db.add(reply)
        if reply.patient_id is not None:
            record(db, now, "reply.closed", reply.patient_id, f"reply {reply.id}")


def settle(app: App, reply_id: int, *, queue: bool) -> tuple[bool, str | None]:
    """Act on a stored reply once, in its own unit of work: (acted now, its answer).

    With `queue`, the answer goes out as a notice, committed with the rest (it cannot ride
    on a webhook's response: poll mode, or a reply settled late). A reply already acted on
    is left alone and its answer given again (a webhook retried).
    """
    with app.db() as db:
        reply = db.get(Reply, reply_id, with_for_update=True, populate_existing=True)
        if reply is None:
            return False, None
        if reply.handled_at is not None:
            return False, reply.answer
        answer = act(db, app.planner(), app.settings, app.renderer, app.triage_rules, reply)
        if answer and queue:
            queue_answer(db, reply, answer, app.clock())
        return True, answer


def settle_unhandled(app: App, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Act on replies stored but never acted on (the process died in between, or acting
    failed, and the provider did not retry). One reply that fails stays for the next
    round and never holds up the others. Returns how many were acted on."""
    with app.db() as db:
        waiting = list(db.exec(select(Reply.id).where(
            col(Reply.handled_at).is_(None), Reply.received_at < app.clock() - older_than)
            .order_by(col(Reply.id))).all())
    settled = 0
    for reply_id in waiting:
        if reply_id is None:
            continue
        try:
            settled += settle(app, reply_id, queue=True)[0]
        except Exception as exc:
            log.error("reply %s: acting on it failed (%s); tried again next round", reply_id,
                      type(exc).__name__)
            log.debug("reply %s: error detail", reply_id, exc_info=True)
    return settled
