"""Patients: search by name, ref, phone or email; add a patient."""

from __future__ import annotations

from sqlmodel import Session as DbSession
from sqlmodel import col, func, or_, select
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.errors import UserError
from aftercare.models import Patient
from aftercare.patients import NewPatient, add_patient
from aftercare.web.console.base import PAGE_SIZE, Page, page


def search(db: DbSession, text: str, page_number: int) -> tuple[list[Patient], bool]:
    """Patients matching `text` (name, ref, email or phone digits), a page at a time, and
    whether another page follows. Forgotten patients are not listed."""
    query = select(Patient).where(col(Patient.forgotten_at).is_(None))
    words = text.strip()
    if words:
        like = f"%{words.lower()}%"
        digits = "".join(ch for ch in words if ch.isdigit())
        matches = [func.lower(Patient.name).like(like), func.lower(Patient.ref).like(like),
                   func.lower(Patient.email).like(like)]
        if len(digits) >= 3:
            matches.append(col(Patient.phone).like(f"%{digits[-9:]}%"))
        query = query.where(or_(*matches))
    rows = list(db.exec(query.order_by(col(Patient.name), col(Patient.id))
                        .offset((page_number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all())
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _list(current: Page, status: int = 200) -> Response:
    text = current.query("q")
    with current.db() as db:
        found, more = search(db, text, current.page_number())
    return current.render("patients.html", status=status, nav="patients", q=text, patients=found,
                          more=more, page_number=current.page_number(),
                          locales=current.app.renderer.locales(),
                          default_locale=current.app.settings.messaging.default_locale,
                          default_timezone=current.app.settings.clinic.timezone)


@page()
def patients_page(current: Page) -> Response:
    """The patient list, searched."""
    return _list(current)


@page()
def add(current: Page) -> Response:
    """Add a patient: the CLI's validation; an error shows next to its field."""
    app = current.app
    chosen = [c for c in ("sms", "email") if current.field(f"channel_{c}")]
    # Both ticked (the default) means what the CLI's default means: every channel the
    # patient gave contact data for.
    channels = None if len(chosen) == 2 else ",".join(chosen)
    new = NewPatient(name=current.field("name"), phone=current.optional("phone"),
                     email=current.optional("email"), timezone=current.optional("timezone"),
                     locale=current.optional("locale"), channels=channels,
                     ref=current.optional("ref"))
    try:
        with current.db() as db:
            added = add_patient(db, new, country=app.settings.clinic.country,
                                default_timezone=app.settings.clinic.timezone,
                                default_locale=app.settings.messaging.default_locale,
                                locales=app.renderer.locales(), clock=app.clock)
    except UserError as error:
        current.refuse(error)
        return _list(current, status=400)
    return current.redirect(f"/patients/{added.id}", current._("Patient added."))


routes: list[BaseRoute] = [
    Route("/patients", patients_page, methods=["GET"]),
    Route("/patients", add, methods=["POST"]),
]
