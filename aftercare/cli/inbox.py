"""`inbox`: what patients texted back, urgent first; acknowledge and close."""

from __future__ import annotations

import random

import click

from aftercare.cli import render, views
from aftercare.cli.context import CLI_ACTOR, Shown, Work, json_option, with_app
from aftercare.notices import queue_staff_reply, send_one
from aftercare.patients import find_patient
from aftercare.queries import alerts_by_reply, patients_by_id
from aftercare.replies import acknowledge, close, find_reply, inbox, retriage


@click.group("inbox", invoke_without_command=True)
@click.option("--all", "everything", is_flag=True, help="Also replies already closed.")
@json_option("Print a JSON list.")
@click.pass_context
def inbox_group(ctx: click.Context, everything: bool, as_json: bool) -> None:
    """Replies from patients waiting for the clinic, urgent first (or `--all`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(inbox_list, everything=everything, as_json=as_json)


@with_app
def inbox_list(work: Work, everything: bool, as_json: bool) -> Shown:
    rows = inbox(work.db, everything=everything)
    if as_json:
        alerts = alerts_by_reply(work.db, {r.id for r in rows if r.id is not None})
        return [views.reply_json(r, alerts.get(r.id or 0, [])) for r in rows]
    known = {r.patient_id for r in rows if r.patient_id is not None}
    return render.inbox(rows, patients_by_id(work.db, known), work.app.settings.clinic.timezone)


@inbox_group.command("ack")
@click.argument("reply_id", metavar="ID", type=int)
@with_app
def inbox_ack(work: Work, reply_id: int) -> Shown:
    """Acknowledge reply ID: someone has it in hand."""
    reply = find_reply(work.db, reply_id)
    acknowledge(work.db, reply, work.app.clock())
    return f"Reply {reply.id} {reply.status}."


@inbox_group.command("triage")
@click.argument("reply_id", metavar="ID", type=int)
@click.argument("level", type=click.Choice(["urgent", "review", "routine"]))
@with_app
def inbox_triage(work: Work, reply_id: int, level: str) -> Shown:
    """Re-triage reply ID: staff's judgement replaces the matcher's."""
    reply = find_reply(work.db, reply_id)
    retriage(work.db, work.app.settings, reply, level, work.app.clock())
    return f"Reply {reply.id} is {reply.triage}."


@inbox_group.command("close")
@click.argument("reply_id", metavar="ID", type=int)
@click.option("--note", help="What was done (kept with the reply).")
@with_app
def inbox_close(work: Work, reply_id: int, note: str | None) -> Shown:
    """Close reply ID: nothing more is needed."""
    reply = find_reply(work.db, reply_id)
    close(work.db, reply, work.app.clock(), note)
    return f"Reply {reply.id} closed."


@click.command("reply")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--text", required=True, help="The SMS to send (kept in the conversation).")
@with_app
def reply_command(work: Work, patient_ident: str, text: str) -> Shown:
    """Send PATIENT an SMS from the clinic now (staff's own words, not a planned message)."""
    app = work.app
    # Two units of work: the notice is committed before it is sent, so it is never lost.
    with app.db(actor=CLI_ACTOR) as db:
        notice = queue_staff_reply(db, find_patient(db, patient_ident), text, app.clock())
        notice_id = notice.id
    outcome = send_one(app, notice_id, random.Random())
    return f"Reply {notice_id} to patient {notice.patient_id}: {outcome or 'queued'}."
