"""`course show|withdraw`."""

from __future__ import annotations

import click

from aftercare.bookings import find_course
from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.clock import zone
from aftercare.courses import withdraw
from aftercare.models import Patient
from aftercare.queries import sessions_of


@click.group("course")
def course_group() -> None:
    """Show and withdraw courses."""


@course_group.command("show")
@click.argument("course_id", metavar="COURSE", type=int)
@json_option("Print the course as JSON.")
@with_app
def course_show(work: Work, course_id: int, as_json: bool) -> Shown:
    """Show a course and its sessions."""
    course = find_course(work.db, course_id)
    sessions = sessions_of(work.db, course)
    if as_json:
        return views.course_json(course, sessions)
    owner = work.db.get(Patient, course.patient_id)
    tz = zone(owner.timezone) if owner else zone(work.app.settings.clinic.timezone)
    return render.course(course, sessions, tz)


@course_group.command("withdraw")
@click.argument("course_id", metavar="COURSE", type=int)
@click.option("--reason", help="Why (kept in the patient's history).")
@json_option("Print the course as JSON.")
@with_app
def course_withdraw(work: Work, course_id: int, reason: str | None, as_json: bool) -> Shown:
    """Stop a course: booked sessions cancelled, nothing pending for it is sent."""
    course = find_course(work.db, course_id)
    plan = withdraw(work.db, work.app.planner(), course, reason)
    if as_json:
        return views.course_json(course, sessions_of(work.db, course))
    return render.withdrawn(course, plan)
