"""`messages` (the queue, listed) and `send-due` (one dispatch pass)."""

from __future__ import annotations

import click

from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.models import MessageStatus


@click.command()
@click.option("--patient", "patient_ident", help="Only this patient (id or ref).")
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]),
              help="Only messages with this status.")
@json_option("Print a JSON list.")
@with_app
def messages(work: Work, patient_ident: str | None, status: str | None, as_json: bool) -> Shown:
    """What will be sent, and when; what was sent, and what happened to it."""
    # Imported here: `send-due`, from this module too, runs often and needs none of it.
    from aftercare.cli import render, views
    from aftercare.outbox import list_messages
    from aftercare.patients import find_patient
    from aftercare.queries import patients_by_id, treatments_by_course

    db = work.db
    patient_id = find_patient(db, patient_ident).id if patient_ident else None
    rows = list_messages(db, patient_id=patient_id, status=status)
    if as_json:
        return [views.message_json(m) for m in rows]
    return render.messages(rows, patients_by_id(db, {m.patient_id for m in rows}),
                           treatments_by_course(db, {m.course_id for m in rows}), work.app.protocols)


@click.command("send-due")
@click.option("--now", "now_text", metavar="TIME",
              help="The global --now, given after the command: the same one clock.")
@json_option("Print the counts as JSON.")
@with_app
def send_due(work: Work, now_text: str | None, as_json: bool) -> Shown:
    """One dispatch pass: settle interrupted sends, send everything due, then stop."""
    from aftercare.checks import require_setup
    from aftercare.cli import render, views

    if now_text is not None:
        work.state.use_now(now_text)
    # Offline checks only (no provider contacted): a missing secret must not eat attempts.
    require_setup(work.app, live=False)
    dispatcher = work.app.dispatcher()
    try:
        dispatcher.recover_stale()
        counts = views.dispatch_counts_json(dispatcher.run_once())
    finally:
        dispatcher.close()  # e.g. SMTP connections kept between emails end with QUIT
    return counts if as_json else render.counts(counts)
