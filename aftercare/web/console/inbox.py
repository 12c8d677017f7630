"""Inbox: every reply waiting for the clinic, urgent first; acknowledge, answer by SMS, close,
re-triage. Urgent and review replies are a clinician's to act on; routine ones the front
desk's too. A reply from a number that is no patient's cannot be answered from here.
"""

from __future__ import annotations

import random

from sqlmodel import Session as DbSession
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.errors import UserError
from aftercare.models import Patient, Reply
from aftercare.notices import queue_staff_reply, sent_or_queued
from aftercare.queries import alerts_by_reply, patients_by_id
from aftercare.replies import acknowledge, close, inbox, retriage
from aftercare.web.console.base import PAGE_SIZE, Page, page
from aftercare.web.console.today import reply_rows
from aftercare.worklist import closed_replies, role_for


def _listing(current: Page, status: int = 200, acted_on: int | None = None,
             action: str = "") -> Response:
    """The inbox page: waiting replies (the inbox's order), then, when asked, closed ones,
    newest first; 50 a page. `acted_on`/`action`: the form whose error to show."""
    show_closed = current.query("closed") == "1"
    number = current.page_number()
    start = (number - 1) * PAGE_SIZE
    with current.db() as db:
        waiting = inbox(db)
        shown = waiting[start:start + PAGE_SIZE + 1]
        if show_closed and len(shown) <= PAGE_SIZE:
            # Closed replies follow the waiting ones, as if in one list.
            shown += closed_replies(db, max(0, start - len(waiting)), PAGE_SIZE + 1 - len(shown))
        ids = {r.id for r in shown if r.id is not None}
        patients = patients_by_id(db, {r.patient_id for r in shown if r.patient_id is not None})
        alerts = alerts_by_reply(db, ids)
    rows = reply_rows(current, shown[:PAGE_SIZE], patients, alerts)
    return current.render("inbox.html", status=status, nav="inbox", rows=rows,
                          more=len(shown) > PAGE_SIZE, page_number=number,
                          show_closed=show_closed, waiting=len(waiting), acted_on=acted_on,
                          action=action)


@page()
def inbox_page(current: Page) -> Response:
    """Every reply waiting for the clinic."""
    return _listing(current)


def _reply(current: Page, db: DbSession) -> Reply:
    """The reply of the URL, if the signed-in role may act on it (403 otherwise)."""
    reply = db.get(Reply, current.request.path_params["reply_id"])
    if reply is None or reply.keyword is not None:
        raise current.not_found(current._("this reply"))
    current.require(role_for(reply))
    return reply


def _patient(current: Page, db: DbSession, reply: Reply, field: str) -> Patient:
    """The patient who sent `reply`, or a UserError: an unknown number is nobody to answer."""
    patient = db.get(Patient, reply.patient_id) if reply.patient_id is not None else None
    if patient is None:
        raise UserError(field, current._("This number is not a patient's: acknowledge or close "
                                         "the reply."))
    return patient


@page()
def acknowledge_reply(current: Page) -> Response:
    """Someone has the reply in hand (stops the escalation of an urgent one)."""
    with current.db() as db:
        reply = _reply(current, db)
        acknowledge(db, reply, current.app.clock())
    return current.redirect("/inbox", current._("Reply acknowledged."))


@page()
def answer_reply(current: Page) -> Response:
    """Answer the patient by SMS (and acknowledge the reply), as `aftercare reply` does: the
    SMS is committed first, then sent."""
    app = current.app
    reply_id = current.request.path_params["reply_id"]
    try:
        with current.db() as db:
            reply = _reply(current, db)
            patient = _patient(current, db, reply, "text")
            notice = queue_staff_reply(db, patient, current.field("text"), app.clock(),
                                       request_key=current.request_key())
            acknowledge(db, reply, app.clock())
            notice_id, name = notice.id, patient.name
    except UserError as error:
        current.refuse(error)
        return _listing(current, status=400, acted_on=reply_id, action="answer")
    outcome = sent_or_queued(app, notice_id, random.Random())
    if outcome == "sent":
        flash = current._("Answer sent to {name}.").format(name=name)
    elif outcome == "failed":
        flash = current._("The answer to {name} could not be sent: see the conversation on "
                          "the patient's page.").format(name=name)
    else:
        flash = current._("The answer to {name} is saved and will be sent shortly.").format(name=name)
    return current.redirect("/inbox", flash)


@page()
def close_reply(current: Page) -> Response:
    """Close the reply: nothing more is needed (with an optional note of what was done)."""
    reply_id = current.request.path_params["reply_id"]
    try:
        with current.db() as db:
            reply = _reply(current, db)
            close(db, reply, current.app.clock(), current.optional("note"))
    except UserError as error:
        current.refuse(error)
        return _listing(current, status=400, acted_on=reply_id, action="close")
    return current.redirect("/inbox", current._("Reply closed."))


@page()
def retriage_reply(current: Page) -> Response:
    """Staff's judgement of the level replaces the matcher's (made urgent, it alerts the
    on-call contact, an unknown number's reply too, as `aftercare inbox triage` does)."""
    reply_id = current.request.path_params["reply_id"]
    try:
        with current.db() as db:
            reply = _reply(current, db)
            retriage(db, current.app.settings, reply, current.field("level"), current.app.clock())
    except UserError as error:
        current.refuse(error)
        return _listing(current, status=400, acted_on=reply_id, action="triage")
    return current.redirect("/inbox", current._("Triage level changed."))


routes: list[BaseRoute] = [
    Route("/inbox", inbox_page, methods=["GET"]),
    Route("/inbox/{reply_id:int}/acknowledge", acknowledge_reply, methods=["POST"]),
    Route("/inbox/{reply_id:int}/answer", answer_reply, methods=["POST"]),
    Route("/inbox/{reply_id:int}/close", close_reply, methods=["POST"]),
    Route("/inbox/{reply_id:int}/triage", retriage_reply, methods=["POST"]),
]
