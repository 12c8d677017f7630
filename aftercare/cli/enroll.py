"""`enroll`: a completed session and the plan that follows it."""

from __future__ import annotations

import click

from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, clinic_time, json_option, with_app
from aftercare.enrollment import SessionVisit
from aftercare.enrollment import enroll as enroll_patient
from aftercare.patients import find_patient


@click.command()
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--treatment", required=True, help="Protocol key, e.g. cellulite.")
@click.option("--session-at", required=True, help="When the session took place (ISO 8601).")
@click.option("--area", help="Treated area, e.g. thighs.")
@click.option("--session-number", type=int, help="Which session of the course this was.")
@click.option("--sessions-planned", type=int, help="Sessions in the course (default: protocol's).")
@click.option("--next-session-at", help="The next booked session, if any (ISO 8601).")
@click.option("--spacing-days", type=int,
              help="Ideal days between sessions (default: the protocol's shortest spacing).")
@json_option("Print the planned messages as JSON.")
@with_app
def enroll(work: Work, patient_ident: str, treatment: str, session_at: str, area: str | None,
           session_number: int | None, sessions_planned: int | None, next_session_at: str | None,
           spacing_days: int | None, as_json: bool) -> Shown:
    """Enroll PATIENT (id or ref) after a session; plans every message of the protocol."""
    app = work.app
    app.protocols.get(treatment)  # an unknown treatment is reported before the times
    visit = SessionVisit(
        treatment=treatment, session_at=clinic_time(app, session_at, "session-at"),
        area=area, session_number=session_number, sessions_planned=sessions_planned,
        next_session_at=(clinic_time(app, next_session_at, "next-session-at")
                         if next_session_at else None), spacing_days=spacing_days)
    found = find_patient(work.db, patient_ident)
    result = enroll_patient(work.db, app.planner(), found, visit)
    return views.enrollment_json(result) if as_json else render.enrollment(found, result, app.protocols)
