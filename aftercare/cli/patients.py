"""`patient add|show|update|opt-out|opt-in|forget`."""

from __future__ import annotations

import click

from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.history import events_of
from aftercare.patients import (
    NewPatient,
    PatientChanges,
    add_patient,
    find_patient,
    set_opt_out,
    update_patient,
)
from aftercare.privacy import forget
from aftercare.queries import courses_of


@click.group()
def patient() -> None:
    """Add, show, update, opt out and forget patients."""


@patient.command("add")
@click.option("--name", required=True, help="Full name; messages greet the first name.")
@click.option("--phone", help="Mobile number, E.164 (+12125550123) or national for the clinic's country.")
@click.option("--email", help="Email address.")
@click.option("--timezone", help="IANA time zone (default: the clinic's).")
@click.option("--locale", help="Message language (default: messaging.default_locale).")
@click.option("--channels", help="sms, email or sms,email (default: every channel with contact data).")
@click.option("--ref", help="The clinic's own patient reference.")
@json_option("Print {id, ref} as JSON.")
@with_app
def patient_add(work: Work, as_json: bool, name: str, phone: str | None, email: str | None,
                timezone: str | None, locale: str | None, channels: str | None,
                ref: str | None) -> Shown:
    """Add a patient with their contact data and consented channels."""
    app = work.app
    new = NewPatient(name=name, phone=phone, email=email, timezone=timezone, locale=locale,
                     channels=channels, ref=ref)
    added = add_patient(work.db, new, country=app.settings.clinic.country,
                        default_timezone=app.settings.clinic.timezone,
                        default_locale=app.settings.messaging.default_locale,
                        locales=app.renderer.locales(), clock=app.clock)
    return views.patient_ref_json(added) if as_json else render.patient_added(added)


@patient.command("show")
@click.argument("patient_ident", metavar="PATIENT")
@json_option("Print the patient as JSON.")
@with_app
def patient_show(work: Work, patient_ident: str, as_json: bool) -> Shown:
    """Show PATIENT's contact data, channels, opt-outs and courses."""
    found = find_patient(work.db, patient_ident)
    data = views.patient_json(found, courses_of(work.db, found.id))
    return data if as_json else render.patient(data)


@patient.command("update")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--name", help="Full name.")
@click.option("--phone", help='Mobile number; "" removes it.')
@click.option("--email", help='Email address; "" removes it.')
@click.option("--timezone", help="IANA time zone; unsent messages move with it.")
@click.option("--locale", help="Message language.")
@click.option("--channels", help="Consented channels: sms, email or sms,email.")
@click.option("--ref", help='The clinic\'s own patient reference; "" removes it.')
@json_option("Print the patient as JSON.")
@with_app
def patient_update(work: Work, patient_ident: str, as_json: bool, name: str | None,
                   phone: str | None, email: str | None, timezone: str | None,
                   locale: str | None, channels: str | None, ref: str | None) -> Shown:
    """Change PATIENT's details; everything not yet sent follows the change."""
    app, db = work.app, work.db
    found = find_patient(db, patient_ident)
    changes = PatientChanges(name=name, phone=phone, email=email, timezone=timezone,
                             locale=locale, channels=channels, ref=ref)
    changed, plan = update_patient(db, app.planner(), found, changes,
                                   country=app.settings.clinic.country,
                                   locales=app.renderer.locales())
    if as_json:
        return views.patient_json(found, courses_of(db, found.id))
    return render.patient_updated(found, changed, plan)


@patient.command("opt-out")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--channel", required=True, type=click.Choice(["sms", "email"]))
@with_app
def patient_opt_out(work: Work, patient_ident: str, channel: str) -> Shown:
    """Record that PATIENT wants no more messages on a channel; pending ones are cancelled."""
    return _consent(work, patient_ident, channel, opted_out=True)


@patient.command("opt-in")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--channel", required=True, type=click.Choice(["sms", "email"]))
@with_app
def patient_opt_in(work: Work, patient_ident: str, channel: str) -> Shown:
    """Undo an opt-out at PATIENT's request; what is still worth sending is planned again."""
    return _consent(work, patient_ident, channel, opted_out=False)


def _consent(work: Work, patient_ident: str, channel: str, *, opted_out: bool) -> Shown:
    found = find_patient(work.db, patient_ident)
    plan = set_opt_out(work.db, work.app.planner(), found, channel, opted_out)
    return render.consent(found, channel, plan, opted_out=opted_out)


@patient.command("history")
@click.argument("patient_ident", metavar="PATIENT")
@json_option("Print the events as JSON.")
@with_app
def patient_history(work: Work, patient_ident: str, as_json: bool) -> Shown:
    """PATIENT's history: every change to their plan, when, why and by whom."""
    found = find_patient(work.db, patient_ident)
    events = [views.event_json(e) for e in events_of(work.db, found.id or 0)]
    return events if as_json else render.history(events, work.app.settings.clinic.timezone)


@patient.command("forget")
@click.argument("patient_ident", metavar="PATIENT")
@with_app
def patient_forget(work: Work, patient_ident: str) -> Shown:
    """Erase PATIENT's personal data (privacy request); keeps only anonymous counts."""
    found = find_patient(work.db, patient_ident)
    return render.forgotten(found, forget(work.db, work.app.planner(), found))
