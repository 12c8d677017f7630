"""Asking Twilio instead of being called by it: `sms.inbound = "poll"`, for clinics behind NAT.

Each pass does what the webhooks do (aftercare/web/twilio.py), through the same functions:

- Incoming: the messages Twilio lists to the clinic's number (`sms.from`) since a cursor kept in
  the database (PollCursor "twilio.incoming"), every page. Each one is stored (`replies.store`)
  and committed, the cursor moving in the same commit; then acted on (`replies.act`) in a unit
  of work of its own. An automatic answer (HELP, urgent, acknowledgement) cannot ride on a
  webhook's response here: it is queued as an ordinary outgoing SMS (`notices.queue_answer`) in
  the same commit as the act, so it goes out once.
- Receipts: the status of our SMS that are not final yet (sent, or waiting to retry after a
  receipt), sent within the last 72 hours, fetched one by one and applied through
  `receipts.apply_receipt`, one unit of work each.

Nothing is done twice across passes or restarts: a reply is one row per Twilio SID
(Reply.provider_id is unique, and `act` runs once per reply), receipts are idempotent and never
go backwards. The cursor only skips listing work; it never decides what is new.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session as DbSession
from sqlmodel import col, select
from twilio.base.exceptions import TwilioException, TwilioRestException

from aftercare.app import App
from aftercare.channels.twilio_sms import make_client
from aftercare.clock import as_utc
from aftercare.config import SmsConfig
from aftercare.models import Message, MessageStatus, PollCursor, Reply
from aftercare.receipts import apply_receipt
from aftercare.replies import Incoming, settle, store

log = logging.getLogger(__name__)

INCOMING_CURSOR = "twilio.incoming"
RECEIPTS_CURSOR = "twilio.receipts"
# The daemon polls no more often than this (Twilio's list and fetch calls are not free).
MIN_POLL_SECONDS = 15.0
# Listing starts this much before the newest message already stored: a message Twilio lists a
# little late (or stamped a little earlier than one already seen) is still found.
SAFETY_MARGIN = timedelta(minutes=15)
# With no cursor yet (the first poll), how far back incoming messages are taken in.
FIRST_LOOKBACK = timedelta(hours=24)
# Receipts are asked for up to this long after a send; later, the message stays as it is.
RECEIPT_WINDOW = timedelta(hours=72)
# A message's status is asked in the first pass after it reaches each of these ages, not in
# every pass: a carrier that never reports (it stays "sent") costs a dozen requests, not one
# per pass for three days. Most receipts come within seconds, so the first checks are early.
RECEIPT_CHECKS = tuple(timedelta(minutes=m) for m in (
    0, 1, 5, 15, 60, 3 * 60, 8 * 60, 24 * 60, 48 * 60, 71 * 60))
PAGE_SIZE = 200  # Twilio allows up to 1000
# Twilio's direction of a message someone sent to one of the account's numbers.
INBOUND = "inbound"


@dataclass
class PollCounts:
    """What one pass did (for logs and tests)."""

    listed: int = 0  # incoming messages Twilio listed (new or already stored)
    stored: int = 0  # of which new replies
    acted: int = 0  # replies acted on in this pass
    answers: int = 0  # automatic answers queued as outgoing SMS
    checked: int = 0  # sent messages whose status was fetched
    receipts: int = 0  # of which changed the message (delivered, undelivered, failed, retrying)
    errors: list[str] = field(default_factory=list)  # why part of the pass was left for the next


class PollSetupError(Exception):
    """The poll cannot ask Twilio at all (credentials missing)."""


def twilio_client(sms: SmsConfig) -> Any:
    """The official client, as the SMS channel builds it; credentials from the environment."""
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if not sid or not token:
        raise PollSetupError("TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN unset")
    return make_client(sms, sid, token)


class Poller:
    """Polls Twilio for one app; the daemon keeps one, so the client (and its connections) is
    reused between passes."""

    def __init__(self, app: App, client: Any = None, *, page_size: int = PAGE_SIZE,
                 rng: random.Random | None = None) -> None:
        self.app = app
        self._client = client
        self.page_size = page_size
        self.rng = rng or random.Random()
        if not app.settings.sms.from_:
            # Twilio lists by number; a messaging service's sender pool is not known here.
            log.warning("sms.inbound is poll but sms.from is not set (messaging service): "
                        "incoming messages are not polled, delivery receipts are")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = twilio_client(self.app.settings.sms)
        return self._client

    def poll_once(self) -> PollCounts:
        """One pass: incoming messages, then receipts. Twilio being unreachable or refusing
        is not an error here (counted in `errors`, left for the next pass); the database
        failing is."""
        counts = PollCounts()
        try:
            client = self.client
        except PollSetupError as exc:
            counts.errors.append(f"sms: {exc}")
            return counts
        if self.app.settings.sms.from_:
            self._incoming(client, counts)
        self._receipts(client, counts)
        return counts

    def run(self) -> None:
        """The daemon's job: one pass, logged; never raises (the next pass tries again)."""
        try:
            counts = self.poll_once()
        except Exception as exc:
            log.exception("poll failed (%s); the next poll tries again", type(exc).__name__)
            return
        for problem in counts.errors:
            log.warning("poll: %s", problem)
        if counts.stored or counts.acted or counts.receipts:
            log.info("poll: %d new replies, %d acted on, %d answers queued, %d receipts applied "
                     "(%d checked)", counts.stored, counts.acted, counts.answers,
                     counts.receipts, counts.checked)

    # -- incoming

    def _incoming(self, client: Any, counts: PollCounts) -> None:
        app = self.app
        now = app.clock()
        with app.db() as db:
            cursor = _cursor(db, INCOMING_CURSOR)
        # UTC: the client writes the bound as it is, with a "Z".
        since = as_utc(cursor - SAFETY_MARGIN if cursor is not None else now - FIRST_LOOKBACK)
        try:
            listed = client.messages.list(to=app.settings.sms.from_, date_sent_after=since,
                                          page_size=self.page_size)
        except (TwilioException, OSError) as exc:
            counts.errors.append(f"incoming: cannot list messages ({_why(exc)})")
            return
        # Twilio lists newest first; store (and act) oldest first, so replies keep their order
        # and the cursor only moves forward.
        reply_ids: list[int] = []
        held = False  # a message still arriving: the cursor stays before it
        for message in reversed(listed):
            if message.direction != INBOUND:
                continue
            counts.listed += 1
            if message.status == "receiving":
                held = True
                continue
            sent = as_utc(message.date_sent) if message.date_sent is not None else None
            incoming = Incoming(provider_id=str(message.sid), from_number=message.from_,
                                to_number=message.to, body=message.body or "")
            with app.db() as db:
                known = db.exec(select(Reply.id).where(
                    Reply.provider_id == incoming.provider_id)).first()
                # Received when the patient sent it, not when we asked.
                reply = store(db, incoming, min(sent, now) if sent is not None else now)
                if sent is not None and not held:
                    _advance(db, INCOMING_CURSOR, sent, now)
            assert reply.id is not None
            if known is None:
                counts.stored += 1
            reply_ids.append(reply.id)
        for reply_id in reply_ids:
            self._act(reply_id, counts)

    def _act(self, reply_id: int, counts: PollCounts) -> None:
        """Act on a stored reply once, in its own unit of work; its answer is queued in the same
        commit. A reply already acted on (an earlier pass, or the notices job's settling of
        unhandled replies) is left alone."""
        try:
            acted, answer = settle(self.app, reply_id, queue=True)
            if acted:
                counts.acted += 1
                counts.answers += bool(answer)
        except Exception as exc:
            # Stored, so not lost: the next pass (or the notices job) acts on it.
            log.exception("reply %s: acting on it failed (%s)", reply_id, type(exc).__name__)
            counts.errors.append(f"reply {reply_id}: acting on it failed ({type(exc).__name__})")

    # -- receipts

    def _receipts(self, client: Any, counts: PollCounts) -> None:
        app = self.app
        now = app.clock()
        with app.db() as db:
            last = _cursor(db, RECEIPTS_CURSOR)
            waiting = db.exec(select(Message.provider_id, Message.sent_at).where(
                Message.channel == "sms", col(Message.provider_id).is_not(None),
                col(Message.status).in_([MessageStatus.SENT, MessageStatus.PENDING]),
                col(Message.sent_at) >= now - RECEIPT_WINDOW)
                .order_by(col(Message.sent_at))).all()
        if last is not None and last > now:
            last = None  # the clock went back: ask about everything once
        for provider_id, sent_at in waiting:
            if provider_id is None or sent_at is None or not _due(sent_at, last, now):
                continue
            try:
                fetched = client.messages(provider_id).fetch()
            except TwilioRestException as exc:
                if exc.status == 404:
                    log.info("receipt poll: Twilio does not know message %s", provider_id)
                    continue
                counts.errors.append(f"receipts: cannot fetch a message ({_why(exc)})")
                return  # the cursor stays: the next pass asks these again
            except (TwilioException, OSError) as exc:
                counts.errors.append(f"receipts: cannot fetch a message ({_why(exc)})")
                return
            counts.checked += 1
            with app.db() as db:
                outcome = apply_receipt(db, app.planner(), app.settings, provider_id,
                                        str(fetched.status or ""), fetched.error_code, self.rng,
                                        to=fetched.to or None)
            if outcome != "ignored":
                counts.receipts += 1
        with app.db() as db:
            _advance(db, RECEIPTS_CURSOR, now, now, forward_only=False)


def poll_once(app: App, client: Any = None, *, page_size: int = PAGE_SIZE) -> PollCounts:
    """One poll pass for `app` (see the module's docstring); `client` defaults to one built from
    the settings and the environment."""
    return Poller(app, client, page_size=page_size).poll_once()


def _due(sent_at: datetime, last: datetime | None, now: datetime) -> bool:
    """Whether a message sent at `sent_at` reached one of RECEIPT_CHECKS' ages since the
    last pass (every waiting message is due when there was none)."""
    if last is None:
        return True
    return any(last < sent_at + age <= now for age in RECEIPT_CHECKS)


def _cursor(db: DbSession, name: str) -> datetime | None:
    row = db.get(PollCursor, name)
    if row is None or not row.value:
        return None
    return as_utc(datetime.fromisoformat(row.value))


def _advance(db: DbSession, name: str, to: datetime, now: datetime, *,
             forward_only: bool = True) -> None:
    """Set the cursor `name` to `to` (only later than it was, unless `forward_only` is off)."""
    row = db.get(PollCursor, name, with_for_update=True)
    if row is None:
        row = PollCursor(name=name, value="", updated_at=now)
    current = as_utc(datetime.fromisoformat(row.value)) if row.value else None
    if forward_only and current is not None and current >= to:
        return
    row.value, row.updated_at = as_utc(to).isoformat(), now
    db.add(row)
    db.flush()


def _why(exc: BaseException) -> str:
    """A short reason without Twilio's message text (which can quote numbers)."""
    if isinstance(exc, TwilioRestException):
        return f"HTTP {exc.status}, code {exc.code}"
    response = exc.args[1] if isinstance(exc, TwilioException) and len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status is not None else type(exc).__name__
