"""`timeline`: one patient's sessions and messages, past and future."""

from __future__ import annotations

import click

from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.patients import find_patient
from aftercare.timeline import timeline


@click.command("timeline")
@click.argument("patient_ident", metavar="PATIENT")
@json_option("Print the entries as JSON.")
@with_app
def timeline_command(work: Work, patient_ident: str, as_json: bool) -> Shown:
    """PATIENT's sessions and messages, past and future, in the patient's local time."""
    found = find_patient(work.db, patient_ident)
    courses, entries = timeline(work.db, found, work.app.protocols)
    if as_json:
        return views.timeline_json(found, courses, entries)
    return render.timeline(found, courses, entries, work.app.clock())
