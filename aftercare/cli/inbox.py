"""`inbox`: what patients texted back, urgent first; acknowledge and close."""

from __future__ import annotations

import click

from aftercare.cli import render, views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.queries import patients_by_id
from aftercare.replies import acknowledge, close, find_reply, inbox


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
        return [views.reply_json(r) for r in rows]
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


@inbox_group.command("close")
@click.argument("reply_id", metavar="ID", type=int)
@click.option("--note", help="What was done (kept with the reply).")
@with_app
def inbox_close(work: Work, reply_id: int, note: str | None) -> Shown:
    """Close reply ID: nothing more is needed."""
    reply = find_reply(work.db, reply_id)
    close(work.db, reply, work.app.clock(), note)
    return f"Reply {reply.id} closed."
