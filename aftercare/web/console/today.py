"""Today: what needs a person now: replies waiting (urgent on top), the day's messages,
failures to act on, and the day's sessions with their check-in answers.

"Today" is the clinic's calendar day in its time zone, from the app's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.models import Notice, Patient, Reply, ReplyStatus
from aftercare.queries import patients_by_id
from aftercare.web.console.base import Page, page
from aftercare.worklist import (
    Remedy,
    clinic_day,
    due_count,
    failures,
    next_due,
    role_for,
    sent_counts,
    sessions_on,
    waiting_counts,
    waiting_replies,
)


def waited(current: Page, since: datetime, now: datetime) -> str:
    """How long something has waited, short: "12 min", "3 h 5 min", "2 d 4 h"."""
    minutes = max(0, int((now - since) / timedelta(minutes=1)))
    if minutes < 60:
        return current._("{minutes} min").format(minutes=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return current._("{hours} h {minutes} min").format(hours=hours, minutes=minutes)
    days, hours = divmod(hours, 24)
    return current._("{days} d {hours} h").format(days=days, hours=hours)


def advice(current: Page, remedy: Remedy) -> str:
    """What to do about a failed message, in plain words in the reader's language."""
    words = {
        Remedy.CHECK_PHONE: current._("Check the phone number with the patient: it does not "
                                      "exist or is mistyped."),
        Remedy.NOT_MOBILE: current._("Ask the patient for a mobile number: this one cannot "
                                     "receive SMS (a landline?)."),
        Remedy.OPTED_OUT: current._("The patient opted out by STOP. Call them if needed; SMS "
                                    "resume only if they text START."),
        Remedy.UNREACHABLE: current._("The phone was off or out of reach: call the patient."),
        Remedy.CARRIER_FILTERED: current._("The carrier blocked it as spam: ask an admin to "
                                           "review the wording and the SMS sender registration."),
        Remedy.ASK_EMAIL: current._("The mailbox refused it: ask the patient for another "
                                    "email address."),
        Remedy.SETUP: current._("The SMS or email setup is refusing messages: ask an admin to "
                                "run aftercare check."),
        Remedy.TEMPLATE: current._("The message could not be written from its template: ask "
                                   "an admin to check the protocol and templates."),
        Remedy.SERVICE: current._("The service kept failing to send it: ask an admin to look "
                                  "at the service, then contact the patient."),
        Remedy.CALL: current._("Contact the patient another way and check their details."),
    }
    return words[remedy]


@dataclass(frozen=True)
class ReplyRow:
    """A reply as the console shows it: who sent it, how long it has waited, what may be done."""

    reply: Reply
    patient: Patient | None
    waited: str
    may_act: bool
    alerts: tuple[Notice, ...] = ()
    # Why the patient cannot be answered by SMS (opted out, no phone...), or None.
    sms_blocked: str | None = None

    @property
    def waiting(self) -> bool:
        return self.reply.status in (ReplyStatus.OPEN, ReplyStatus.ACKNOWLEDGED)


def reply_rows(current: Page, replies: list[Reply], patients: dict[int | None, Patient],
               alerts: dict[int, list[Notice]] | None = None) -> list[ReplyRow]:
    """The rows for `replies` (patients and alerts loaded beforehand, one query each)."""
    now = current.app.clock()
    rows = []
    for reply in replies:
        patient = patients.get(reply.patient_id) if reply.patient_id is not None else None
        rows.append(ReplyRow(
            reply=reply, patient=patient, waited=waited(current, reply.received_at, now),
            may_act=current.may(role_for(reply)),
            alerts=tuple((alerts or {}).get(reply.id or 0, ())),
            sms_blocked=patient.unreachable_reason("sms") if patient is not None else None))
    return rows


@page()
def today_page(current: Page) -> Response:
    """The day at a glance, for the front desk and clinicians."""
    now = current.app.clock()
    day = clinic_day(now, current.tz)
    with current.db() as db:
        replies = waiting_replies(db)
        counts = waiting_counts(db)
        patients = patients_by_id(db, {r.patient_id for r in replies if r.patient_id is not None})
        due = due_count(db, day)
        upcoming = next_due(db, day)
        sent = sent_counts(db, day)
        failed, failed_total = failures(db, now)
        visits = sessions_on(db, day)
    return current.render(
        "today.html", nav="today", today=day, replies=reply_rows(current, replies, patients),
        counts=counts, due=due, upcoming=upcoming, sent=sent, sent_total=sum(sent.values()),
        failed=[(f, advice(current, f.remedy)) for f in failed], failed_total=failed_total,
        visits=visits, treatments={p.key: p.name for p in current.app.protocols})


routes: list[BaseRoute] = [Route("/", today_page, methods=["GET"])]
