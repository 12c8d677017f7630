"""Enroll after a session: the treatment, when it took place, the next visit; a preview of
the planned messages (the real `enroll`, rolled back) before anything is saved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session as DbSession
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.clock import parse_time
from aftercare.enrollment import Enrollment, SessionVisit, enroll
from aftercare.errors import UserError
from aftercare.models import Patient
from aftercare.patients import find_patient
from aftercare.protocols import Protocol, ProtocolBook
from aftercare.timeline import step_label
from aftercare.web.console.base import Page, page
from aftercare.web.console.patients import search

SEARCH_LIMIT = 10  # patients listed by the search box of this page


@dataclass(frozen=True)
class Chosen:
    """The patient being enrolled, as this page shows them."""

    id: int
    name: str
    ref: str | None
    phone: str | None
    email: str | None

    @property
    def ident(self) -> str:
        """What the Patient field holds: "#12" is always the id, never a ref."""
        return f"#{self.id}"


@dataclass(frozen=True)
class PlannedRow:
    """One step of the plan at one time, on every channel it goes by."""

    at: datetime
    step: str
    title: str
    channels: tuple[str, ...]
    status: str


@dataclass(frozen=True)
class Plan:
    """What enrolling did (or would do), copied out of the unit of work that made it."""

    treatment: str
    treatment_name: str
    session_number: int
    sessions_planned: int
    next_session_at: datetime | None
    created: int
    rows: tuple[PlannedRow, ...]


def chosen(patient: Patient) -> Chosen:
    assert patient.id is not None  # a stored patient
    return Chosen(id=patient.id, name=patient.name, ref=patient.ref, phone=patient.phone,
                  email=patient.email)


def plan_of(result: Enrollment, protocols: ProtocolBook) -> Plan:
    """The enrollment's messages as plain rows, one per step and time (they outlive a
    rolled-back unit of work, whose objects are expunged)."""
    treatment = result.course.treatment
    protocol = protocols.get(treatment)
    grouped: dict[tuple[datetime, str, str], list[str]] = {}
    for message in result.messages:
        key = (message.send_after, step_label(message, treatment, protocols), message.status)
        grouped.setdefault(key, []).append(message.channel)
    rows = tuple(PlannedRow(at=at, step=label, title=_title(protocol, label), status=status,
                            channels=tuple(channels))
                 for (at, label, status), channels in grouped.items())
    return Plan(treatment=treatment, treatment_name=protocol.name, session_number=result.session.number,
                sessions_planned=result.course.sessions_planned,
                next_session_at=result.next_session.at if result.next_session else None,
                created=result.created, rows=rows)


def _title(protocol: Protocol, label: str) -> str:
    try:
        return protocol.step(label.split(" #")[0]).title
    except KeyError:  # a step a clinic's protocol file no longer has
        return label


def enroll_or_preview(db: DbSession, current: Page, patient_id: int, visit: SessionVisit, *,
                      save: bool) -> Plan:
    """Enroll with the library's `enroll`; unless `save`, roll the unit of work back so the
    preview is exactly what saving would plan, and nothing is written."""
    patient = db.get(Patient, patient_id)
    if patient is None:
        raise UserError("patient", "this patient no longer exists; search again")
    result = enroll(db, current.app.planner(), patient, visit)
    plan = plan_of(result, current.app.protocols)
    if not save:
        db.rollback()
    return plan


# --- the page --------------------------------------------------------------------------


def _default_time(current: Page) -> str:
    """Now, in the clinic's zone, as a datetime-local input wants it."""
    return current.app.clock().astimezone(current.tz).strftime("%Y-%m-%dT%H:%M")


def _find(current: Page, ident: str) -> Chosen | None:
    """The patient `ident` names (id, #id or ref), or None with the error remembered."""
    if not ident:
        current.refuse(UserError("patient", current._(
            "Choose the patient: type their number or clinic reference, or search below.")))
        return None
    try:
        with current.db() as db:
            return chosen(find_patient(db, ident))
    except UserError as error:
        current.refuse(error)
        return None


def _time(current: Page, name: str, *, required: bool) -> datetime | None:
    text = current.field(name)
    if not text:
        if required:
            current.refuse(UserError(name, current._("Enter the date and time of the session.")))
        return None
    try:
        return parse_time(text, current.tz, name)
    except UserError as error:
        current.refuse(error)
        return None


def _visit(current: Page) -> SessionVisit | None:
    """The form as a SessionVisit, or None with every field's error remembered."""
    treatment = current.field("treatment")
    if not treatment:
        current.refuse(UserError("treatment", current._("Choose the treatment.")))
    else:
        try:
            current.app.protocols.get(treatment)
        except UserError as error:
            current.refuse(error)
    session_at = _time(current, "session-at", required=True)
    next_at = _time(current, "next-session-at", required=False)
    number_text = current.field("session-number")
    number = None
    if number_text:
        if number_text.isascii() and number_text.isdigit():
            number = int(number_text)
        else:
            current.refuse(UserError("session-number", current._(
                "Write the session number as a whole number: 1, 2, 3...")))
    if current.errors or session_at is None:
        return None
    return SessionVisit(treatment=treatment, session_at=session_at,
                        area=current.optional("area"), session_number=number,
                        next_session_at=next_at)


def _refuse(current: Page, error: UserError) -> None:
    """The library's error next to its field, its command-line option names as the
    form's labels."""
    problem = (error.problem
               .replace("--next-session-at", current._('"Next session (optional)"'))
               .replace("--session-at", current._('"Session date and time"')))
    current.refuse(UserError(error.field, problem))


def _form(current: Page, *, patient: Chosen | None, plan: Plan | None = None,
          saved: bool = False, status: int = 200) -> Response:
    app = current.app
    found: list[Patient] = []
    q = current.query("q")
    if q:
        with current.db() as db:
            found = search(db, q, 1)[0][:SEARCH_LIMIT]
    areas = sorted({area for protocol in app.protocols for area in protocol.areas})
    return current.render(
        "enroll.html", status=status, nav="enroll", patient=patient, plan=plan, saved=saved,
        q=q, found=found, treatments=[(p.key, p.name) for p in app.protocols], areas=areas,
        default_time=_default_time(current))


@page()
def enroll_page(current: Page) -> Response:
    """The enroll form; `?patient=ID` chooses the patient, `?q=` searches for one."""
    ident = current.query("patient")
    patient = None
    if ident.isdigit():
        with current.db() as db:
            found = db.get(Patient, int(ident))
            patient = chosen(found) if found is not None and found.forgotten_at is None else None
    return _form(current, patient=patient)


@page()
def enroll_submit(current: Page) -> Response:
    """Preview (nothing saved) or Enroll, as the button pressed says."""
    save = current.field("action") == "enroll"
    visit = _visit(current)
    patient = _find(current, current.field("patient"))
    if visit is None or patient is None:
        return _form(current, patient=patient, status=400)
    try:
        with current.db() as db:
            plan = enroll_or_preview(db, current, patient.id, visit, save=save)
    except UserError as error:
        _refuse(current, error)
        return _form(current, patient=patient, status=400)
    if save:
        return current.redirect(f"/patients/{patient.id}", current._(
            "Enrolled: {count} message(s) planned.").format(count=plan.created))
    return _form(current, patient=patient, plan=plan)


routes: list[BaseRoute] = [
    Route("/enroll", enroll_page, methods=["GET"]),
    Route("/enroll", enroll_submit, methods=["POST"]),
]
