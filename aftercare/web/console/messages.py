"""Messages: every planned and sent message, filtered by status, channel, step and the
clinic's day, 50 a page; a failed one says what to do about it."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.errors import UserError
from aftercare.models import Message
from aftercare.outbox import message_filter, message_page
from aftercare.queries import patients_by_id, treatments_by_course
from aftercare.timeline import step_label
from aftercare.web.console.base import PAGE_SIZE, Page, page
from aftercare.web.console.today import advice
from aftercare.worklist import NEEDS_A_PERSON, remedy


@page()
def messages_page(current: Page) -> Response:
    """The message list, filtered; a bad filter value answers 400 next to its field."""
    app = current.app
    steps = sorted({step.key for protocol in app.protocols for step in protocol.steps})
    values = {name: current.query(name) for name in ("status", "channel", "step", "day", "sort")}
    step_options = [(step, step) for step in steps]
    try:
        chosen = message_filter(**values, steps=steps, tz=current.tz)
    except UserError as error:
        current.refuse(error)
        return current.render("messages.html", status=400, nav="messages", values=values,
                              rows=[], more=False, page_number=1, step_options=step_options)
    number = current.page_number()
    with current.db() as db:
        found, more = message_page(db, chosen, number, PAGE_SIZE)
        patients = patients_by_id(db, {m.patient_id for m in found})
        treatments = treatments_by_course(db, {m.course_id for m in found})
    rows = [(m, patients.get(m.patient_id), step_label(m, treatments.get(m.course_id, ""),
                                                      app.protocols), _todo(current, m))
            for m in found]
    return current.render("messages.html", nav="messages", values=values, rows=rows, more=more,
                          page_number=number, step_options=step_options)


def _todo(current: Page, message: Message) -> str:
    """What to do about a message that needs a person; "" for the others."""
    if message.status not in NEEDS_A_PERSON:
        return ""
    return advice(current, remedy(message.channel, message.last_error))


routes: list[BaseRoute] = [Route("/messages", messages_page, methods=["GET"])]
