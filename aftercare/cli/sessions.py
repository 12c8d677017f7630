"""`session book|reschedule|cancel|no-show|complete`."""

from __future__ import annotations

import click

from aftercare.bookings import Booking, book, cancel, complete, find_session, reschedule
from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, clinic_time, json_option, with_app
from aftercare.clock import zone
from aftercare.models import Patient
from aftercare.patients import find_patient

JSON_HELP = "Print the session as JSON."


@click.group("session")
def session_group() -> None:
    """Book, reschedule, cancel and complete sessions."""


@session_group.command("book")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--at", "at_text", required=True, help="When (ISO 8601; clinic time if no offset).")
@click.option("--course", "course_id", type=int, help="Which course (default: the patient's only one).")
@click.option("--treatment", help="Start or continue a course of this treatment.")
@json_option(JSON_HELP)
@with_app
def session_book(work: Work, patient_ident: str, at_text: str, course_id: int | None,
                 treatment: str | None, as_json: bool) -> Shown:
    """Book a session for PATIENT: plans its reminders, cancels pending rebooking nudges."""
    at = clinic_time(work.app, at_text, "at")
    db = work.db
    booking = book(db, work.app.planner(), find_patient(db, patient_ident), at,
                   course_id=course_id, treatment=treatment)
    return _shown(work, booking, "Booked", as_json)


@session_group.command("reschedule")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--at", "at_text", required=True, help="The new time (ISO 8601).")
@json_option(JSON_HELP)
@with_app
def session_reschedule(work: Work, session_id: int, at_text: str, as_json: bool) -> Shown:
    """Move a booked SESSION; its pending reminders move with it."""
    at = clinic_time(work.app, at_text, "at")
    booking = reschedule(work.db, work.app.planner(), find_session(work.db, session_id), at)
    return _shown(work, booking, "Moved", as_json)


@session_group.command("cancel")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--reason", help="Why (kept in the patient's history).")
@json_option(JSON_HELP)
@with_app
def session_cancel(work: Work, session_id: int, reason: str | None, as_json: bool) -> Shown:
    """Cancel a booked SESSION; with none other booked, a rebooking nudge is planned."""
    booking = cancel(work.db, work.app.planner(), find_session(work.db, session_id), reason)
    return _shown(work, booking, "Cancelled", as_json)


@session_group.command("no-show")
@click.argument("session_id", metavar="SESSION", type=int)
@json_option(JSON_HELP)
@with_app
def session_no_show(work: Work, session_id: int, as_json: bool) -> Shown:
    """Record that the patient missed a booked SESSION; plans a rebooking nudge."""
    booking = cancel(work.db, work.app.planner(), find_session(work.db, session_id), no_show=True)
    return _shown(work, booking, "Marked missed:", as_json)


@session_group.command("complete")
@click.argument("session_id", metavar="SESSION", type=int)
@json_option(JSON_HELP)
@with_app
def session_complete(work: Work, session_id: int, as_json: bool) -> Shown:
    """The booked SESSION took place: plan its aftercare (same as `enroll`)."""
    booking = complete(work.db, work.app.planner(), find_session(work.db, session_id))
    return _shown(work, booking, "Completed", as_json)


def _shown(work: Work, booking: Booking, verb: str, as_json: bool) -> Shown:
    if as_json:
        return views.session_json(booking.session)
    owner = work.db.get(Patient, booking.course.patient_id)
    tz = zone(owner.timezone) if owner else zone(work.app.settings.clinic.timezone)
    return render.session_change(booking, verb, tz)
