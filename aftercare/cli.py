"""The `aftercare` command: parse, call the library, print. User errors exit with status 2."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, NoReturn

import click

from aftercare.app import App
from aftercare.clock import parse_time, zone
from aftercare.db import migrate
from aftercare.errors import UserError
from aftercare.models import Message, MessageStatus, Patient
from aftercare.outbox import list_messages, message_json
from aftercare.segments import budget, measure, name_of

EXIT_USER_ERROR = 2


def _fail(error: UserError) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_USER_ERROR)


class _Group(click.Group):
    """Turns every UserError raised by a command into one line on stderr and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as error:
            _fail(error)


def _app(ctx: click.Context, *, json_output: bool = False) -> App:
    state = ctx.find_root().obj
    if "app" not in state:
        # With --json, stdout carries one JSON document: console channels print to stderr.
        console = sys.stderr if json_output else None
        app = App.from_config(state["config"], console=console)
        if state["now"]:
            fixed = parse_time(state["now"], zone(app.settings.clinic.timezone), "now")
            app.clock = lambda: fixed
        state["app"] = app
    return state["app"]


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=_Group)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Config file (also AFTERCARE_CONFIG; default ./config/aftercare.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log what is done (counts, never patient data).")
@click.option("--now", "now", metavar="TIME",
              help="Act as if the clock read TIME (ISO 8601): for replays and tests.")
@click.version_option(package_name="aftercare")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool, now: str | None) -> None:
    """Aftercare messages for patients between mesotherapy sessions."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["now"] = now
    ctx.obj["verbose"] = verbose
    _logging(verbose, daemon=False)


def _logging(verbose: bool, *, daemon: bool) -> None:
    """Counts at INFO for the daemon, per-message lines (ids only) with -v."""
    level = logging.DEBUG if verbose else logging.INFO if daemon else logging.WARNING
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aftercare").setLevel(level)
    # APScheduler logs two INFO lines per tick: thousands a day that say nothing.
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the database schema, or upgrade it to this release's. Safe to run again."""
    app = _app(ctx)
    before, after = migrate(app.engine)
    url = app.engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"Database {url} is up to date (schema {after}).")
    else:
        click.echo(f"Database {url} {'created' if before is None else 'upgraded'} "
                   f"(schema {before or 'none'} -> {after}).")


@cli.group()
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
@click.option("--json", "as_json", is_flag=True, help="Print {id, ref} as JSON.")
@click.pass_context
def patient_add(ctx: click.Context, as_json: bool, **fields: str | None) -> None:
    """Add a patient with their contact data and consented channels."""
    from aftercare.patients import NewPatient, add_patient

    app = _app(ctx)
    messaging = app.settings.messaging
    with app.db() as db:
        added = add_patient(db, NewPatient(**fields),  # type: ignore[arg-type]
                            country=app.settings.clinic.country,
                            default_timezone=app.settings.clinic.timezone,
                            default_locale=messaging.default_locale,
                            locales=app.renderer.locales(), clock=app.clock)
    if as_json:
        _emit({"id": added.id, "ref": added.ref})
    else:
        ref = f" (ref {added.ref})" if added.ref else ""
        click.echo(f"Added patient {added.id}{ref}: {added.name}, "
                   f"{added.channels.replace(',', '+')}, {added.timezone}, {added.locale}.")


@cli.command()
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--treatment", required=True, help="Protocol key, e.g. cellulite.")
@click.option("--session-at", required=True, help="When the session took place (ISO 8601).")
@click.option("--area", help="Treated area, e.g. thighs.")
@click.option("--session-number", type=int, help="Which session of the course this was.")
@click.option("--sessions-planned", type=int, help="Sessions in the course (default: protocol's).")
@click.option("--next-session-at", help="The next booked session, if any (ISO 8601).")
@click.option("--spacing-days", type=int,
              help="Ideal days between sessions (default: the protocol's shortest spacing).")
@click.option("--json", "as_json", is_flag=True, help="Print the planned messages as JSON.")
@click.pass_context
def enroll(ctx: click.Context, patient_ident: str, treatment: str, session_at: str,
           area: str | None, session_number: int | None, sessions_planned: int | None,
           next_session_at: str | None, spacing_days: int | None, as_json: bool) -> None:
    """Enroll PATIENT (id or ref) after a session; plans every message of the protocol."""
    from aftercare.enrollment import SessionVisit
    from aftercare.enrollment import enroll as enroll_patient
    from aftercare.patients import find_patient

    app = _app(ctx)
    clinic_tz = zone(app.settings.clinic.timezone)
    app.protocols.get(treatment)
    visit = SessionVisit(
        treatment=treatment, session_at=parse_time(session_at, clinic_tz, "session-at"),
        area=area, session_number=session_number, sessions_planned=sessions_planned,
        next_session_at=(parse_time(next_session_at, clinic_tz, "next-session-at")
                         if next_session_at else None), spacing_days=spacing_days)
    with app.db() as db:
        found = find_patient(db, patient_ident)
        result = enroll_patient(db, app.planner(), found, visit)
    if as_json:
        keys = ("id", "step", "channel", "send_after", "status")
        _emit({"course_id": result.course.id, "session_id": result.session.id,
               "messages": [{k: message_json(m)[k] for k in keys} for m in result.messages]})
        return
    already = len(result.messages) - result.created
    click.echo(f"Enrolled patient {found.id} in {treatment}: course {result.course.id}, "
               f"session {result.session.number} of {result.course.sessions_planned}. "
               f"{result.created} message(s) planned"
               + (f", {already} already planned." if already else "."))
    _table(result.messages, {found.id: found},
           {result.course.id: result.course.treatment}, app)


@cli.command()
@click.option("--patient", "patient_ident", help="Only this patient (id or ref).")
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]),
              help="Only messages with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def messages(ctx: click.Context, patient_ident: str | None, status: str | None,
             as_json: bool) -> None:
    """What will be sent, and when; what was sent, and what happened to it."""
    from aftercare.patients import find_patient

    app = _app(ctx)
    with app.db() as db:
        patient_id = find_patient(db, patient_ident).id if patient_ident else None
        rows = list_messages(db, patient_id=patient_id, status=status)
        patients = {p.id: p for p in db.exec(_patients_of(rows)).all()} if rows else {}
        treatments = _treatments_of(db, rows)
    if as_json:
        _emit([message_json(m) for m in rows])
    elif not rows:
        click.echo("No messages.")
    else:
        _table(rows, patients, treatments, app)


def _patients_of(rows: list[Message]) -> Any:
    from sqlmodel import col, select

    return select(Patient).where(col(Patient.id).in_({m.patient_id for m in rows}))


def _treatments_of(db: Any, rows: list[Message]) -> dict[int | None, str]:
    from sqlmodel import col, select

    from aftercare.models import Course

    ids = {m.course_id for m in rows}
    return {c.id: c.treatment for c in db.exec(select(Course).where(col(Course.id).in_(ids)))}


def _table(rows: list[Message], patients: dict[int | None, Patient],
           treatments: dict[int | None, str], app: App) -> None:
    from aftercare.timeline import step_label

    click.echo(f"{'ID':>5}  {'PATIENT':<8} {'STEP':<17} {'CHANNEL':<7} {'SEND AFTER (local)':<24}"
               f" {'STATUS':<9} {'TRIES':>5}  DETAIL")
    for m in rows:
        owner = patients.get(m.patient_id)
        local = m.send_after.astimezone(zone(owner.timezone)) if owner else m.send_after
        when = f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
        detail = " | ".join(part for part in (m.provider_id, m.last_error) if part)
        label = step_label(m, treatments.get(m.course_id, ""), app.protocols)
        click.echo(f"{m.id:>5}  {m.patient_id:<8} {label:<17} {m.channel:<7} {when:<24} "
                   f"{m.status:<9} {m.attempts:>5}  {detail}")


@cli.command("send-due")
@click.option("--now", "now_text", metavar="TIME",
              help="The global --now, given after the command: the same one clock.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
def send_due(ctx: click.Context, now_text: str | None, as_json: bool) -> None:
    """One dispatch pass: settle interrupted sends, send everything due, then stop."""
    state = ctx.find_root().obj
    if now_text is not None:
        if state["now"] not in (None, now_text):
            raise UserError("now", "given twice with different times; give it once")
        state["now"] = now_text
    app = _app(ctx, json_output=as_json)
    from aftercare.checks import require_setup

    # Offline checks only (no provider contacted): a missing secret must not eat attempts.
    require_setup(app, live=False)
    dispatcher = app.dispatcher()
    dispatcher.recover_stale()
    counts = dispatcher.run_once()
    if as_json:
        _emit(counts.as_dict())
    else:
        click.echo(", ".join(f"{value} {name}" for name, value in counts.as_dict().items()))


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon: send due messages every poll interval until SIGTERM or Ctrl-C."""
    from aftercare.daemon import run_daemon

    state = ctx.find_root().obj
    if state["now"]:
        raise UserError("now", "the daemon runs on the real clock; use `send-due --now TIME` "
                        "for one pass at another time")
    _logging(state["verbose"], daemon=True)
    run_daemon(_app(ctx))


@cli.command()
@click.option("--offline", is_flag=True, help="Skip contacting Twilio and the SMTP relay.")
@click.pass_context
def check(ctx: click.Context, offline: bool) -> None:
    """Check the setup: config, database, credentials, Twilio and the SMTP relay."""
    from aftercare.checks import setup_problems

    app = _app(ctx)
    problems = setup_problems(app, live=not offline)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        sys.exit(EXIT_USER_ERROR)
    settings = app.settings
    click.echo(f"ok: database {app.engine.url.render_as_string(hide_password=True)} is at "
               f"this release's schema; protocols: {', '.join(p.key for p in app.protocols)}; "
               f"sms via {settings.sms.provider}; email via {settings.email.provider}"
               + (" (not contacted)" if offline else ""))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the protocols as JSON.")
@click.pass_context
def protocols(ctx: click.Context, as_json: bool) -> None:
    """List the treatments: course, maintenance and every step with its timing."""
    from aftercare.protocols import describe_timing

    app = _app(ctx)
    listed = [{"key": p.key, "name": p.name, "region": p.region, "areas": list(p.areas),
               "sessions": p.sessions, "spacing_days": list(p.spacing_days),
               "maintenance": p.maintenance.summary if p.maintenance else None,
               "maintenance_cadence": [phase.model_dump() for phase in p.maintenance.cadence]
               if p.maintenance else [],
               "steps": [{"key": s.key, "title": s.title, "timing": describe_timing(s),
                          "valid_for_hours": s.valid_for.total_seconds() / 3600,
                          "channels": list(s.channels), "on_sessions": s.on_sessions}
                         for s in p.steps]} for p in app.protocols]
    if as_json:
        _emit(listed)
        return
    for item in listed:
        low, high = item["spacing_days"]
        where = ", ".join(item["areas"]) or f"{item['region']} region"
        click.echo(f"{item['key']}: {item['name']} ({where})")
        sessions = f"{item['sessions']} session{'s' if item['sessions'] != 1 else ''}"
        click.echo(f"  course: {sessions}, {low}-{high} days apart; "
                   f"maintenance: {item['maintenance'] or 'not set'}")
        if item["maintenance_cadence"]:
            phases = ", then ".join(
                f"every {phase['every_days']} days"
                + (f" x{phase['times']}" if phase["times"] else " up to the horizon")
                for phase in item["maintenance_cadence"])
            click.echo(f"  maintenance reminders: {phases}")
        for step in item["steps"]:
            once = "" if step["on_sessions"] == "every" else f", after the {step['on_sessions']} session"
            click.echo(f"  - {step['key']:<16} {step['timing']}{once}; valid "
                       f"{step['valid_for_hours']:g}h; {'+'.join(step['channels'])}")
        click.echo()


@cli.command("preview")
@click.option("--treatment", required=True, help="Protocol key, e.g. cellulite.")
@click.option("--locale", help="Language (default: messaging.default_locale).")
@click.option("--channel", type=click.Choice(["sms", "email"]), help="Only this channel.")
@click.pass_context
def preview_command(ctx: click.Context, treatment: str, locale: str | None,
                    channel: str | None) -> None:
    """Show every message of a treatment as a sample patient would receive it."""
    from aftercare.preview import preview

    app = _app(ctx)
    locale = locale or app.settings.messaging.default_locale
    if locale not in app.renderer.locales():
        raise UserError("locale", f"'{locale}' has no templates; use one of "
                        f"{', '.join(app.renderer.locales())}")
    items = preview(app.settings, app.renderer, app.protocols.get(treatment), locale, channel,
                    today=app.clock())
    for item in items:
        click.echo(f"=== {item.step} [{item.channel}]  {item.timing}: {item.title}")
        if item.rendered.subject:
            click.echo(f"Subject: {item.rendered.subject}\n")
        click.echo(item.rendered.text)
        if item.channel == "sms":
            size = measure(item.rendered.text)
            over = " OVER BUDGET" if size.segments > budget(locale) else ""
            click.echo(f"({len(item.rendered.text)} characters, {size.describe()}{over})")
            if size.forcing_ucs2:
                click.echo("UCS-2 because of: " + ", ".join(map(name_of, size.forcing_ucs2)))
        click.echo()


@patient.command("show")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--json", "as_json", is_flag=True, help="Print the patient as JSON.")
@click.pass_context
def patient_show(ctx: click.Context, patient_ident: str, as_json: bool) -> None:
    """Show PATIENT's contact data, channels, opt-outs and courses."""
    from aftercare.patients import find_patient, patient_json

    app = _app(ctx)
    with app.db() as db:
        data = patient_json(db, find_patient(db, patient_ident))
    if as_json:
        _emit(data)
        return
    ref = f", ref {data['ref']}" if data["ref"] else ""
    click.echo(f"Patient {data['id']}{ref}: {data['name']}")
    if data["forgotten_at"]:
        click.echo(f"  forgotten on {data['forgotten_at']}: personal data erased")
    click.echo(f"  phone {data['phone'] or '-'}, email {data['email'] or '-'}")
    click.echo(f"  {data['timezone']}, messages in {data['locale']}")
    for channel in ("sms", "email"):
        state = ("consented" if channel in data["channels"] else "not consented")
        if data["opted_out"][channel]:
            state += f", opted out {data['opted_out'][channel]}"
        contact = "phone" if channel == "sms" else "email"
        if data["invalid"][contact]:
            state += f", {contact} invalid since {data['invalid'][contact]}"
        click.echo(f"  {channel}: {state}{'' if data['reachable'][channel] else ' (not used)'}")
    for course in data["courses"]:
        click.echo(f"  course {course['id']}: {course['treatment']}, {course['status']}")


@patient.command("update")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--name", help="Full name.")
@click.option("--phone", help='Mobile number; "" removes it.')
@click.option("--email", help='Email address; "" removes it.')
@click.option("--timezone", help="IANA time zone; unsent messages move with it.")
@click.option("--locale", help="Message language.")
@click.option("--channels", help="Consented channels: sms, email or sms,email.")
@click.option("--ref", help='The clinic\'s own patient reference; "" removes it.')
@click.option("--json", "as_json", is_flag=True, help="Print the patient as JSON.")
@click.pass_context
def patient_update(ctx: click.Context, patient_ident: str, as_json: bool,
                   **fields: str | None) -> None:
    """Change PATIENT's details; everything not yet sent follows the change."""
    from aftercare.patients import PatientChanges, find_patient, patient_json, update_patient

    app = _app(ctx)
    with app.db() as db:
        found = find_patient(db, patient_ident)
        changed, plan = update_patient(db, app.planner(), found, PatientChanges(**fields),
                                       country=app.settings.clinic.country,
                                       locales=app.renderer.locales())
        data = patient_json(db, found)
    if as_json:
        _emit(data)
    elif changed:
        click.echo(f"Updated patient {found.id}: {', '.join(changed)}. Messages: "
                   f"{plan.describe()}.")
    else:
        click.echo(f"Patient {found.id} unchanged.")


@patient.command("opt-out")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--channel", required=True, type=click.Choice(["sms", "email"]))
@click.pass_context
def patient_opt_out(ctx: click.Context, patient_ident: str, channel: str) -> None:
    """Record that PATIENT wants no more messages on a channel; pending ones are cancelled."""
    _consent(ctx, patient_ident, channel, opted_out=True)


@patient.command("opt-in")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--channel", required=True, type=click.Choice(["sms", "email"]))
@click.pass_context
def patient_opt_in(ctx: click.Context, patient_ident: str, channel: str) -> None:
    """Undo an opt-out at PATIENT's request; what is still worth sending is planned again."""
    _consent(ctx, patient_ident, channel, opted_out=False)


def _consent(ctx: click.Context, patient_ident: str, channel: str, *, opted_out: bool) -> None:
    from aftercare.patients import find_patient, set_opt_out

    app = _app(ctx)
    with app.db() as db:
        found = find_patient(db, patient_ident)
        plan = set_opt_out(db, app.planner(), found, channel, opted_out)
    what = "opted out of" if opted_out else "opted back in to"
    click.echo(f"Patient {found.id} {what} {channel}. Messages: {plan.describe()}.")


@patient.command("forget")
@click.argument("patient_ident", metavar="PATIENT")
@click.pass_context
def patient_forget(ctx: click.Context, patient_ident: str) -> None:
    """Erase PATIENT's personal data (privacy request); keeps only anonymous counts."""
    from aftercare.patients import find_patient
    from aftercare.privacy import forget

    app = _app(ctx)
    with app.db() as db:
        found = find_patient(db, patient_ident)
        plan = forget(db, app.planner(), found)
    click.echo(f"Patient {found.id} forgotten: name, contact data and message texts erased; "
               f"{len(plan.cancelled)} pending message(s) cancelled.")


@cli.group("session")
def session_group() -> None:
    """Book, reschedule, cancel and complete sessions."""


def _session_out(ctx: click.Context, booking: Any, verb: str, as_json: bool) -> None:
    from aftercare.bookings import session_json

    if as_json:
        _emit(session_json(booking.session))
        return
    app = _app(ctx)
    with app.db() as db:
        owner = db.get(Patient, booking.course.patient_id)
    tz = zone(owner.timezone) if owner else zone(app.settings.clinic.timezone)
    local = booking.session.at.astimezone(tz)
    click.echo(f"{verb} session {booking.session.id} (session {booking.session.number} of "
               f"{booking.course.treatment} course {booking.course.id}) at "
               f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}. Messages: "
               f"{booking.changes.describe()}.")


def _at(ctx: click.Context, text: str) -> Any:
    return parse_time(text, zone(_app(ctx).settings.clinic.timezone), "at")


@session_group.command("book")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--at", "at_text", required=True, help="When (ISO 8601; clinic time if no offset).")
@click.option("--course", "course_id", type=int, help="Which course (default: the patient's only one).")
@click.option("--treatment", help="Start or continue a course of this treatment.")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def session_book(ctx: click.Context, patient_ident: str, at_text: str, course_id: int | None,
                 treatment: str | None, as_json: bool) -> None:
    """Book a session for PATIENT: plans its reminders, cancels pending rebooking nudges."""
    from aftercare.bookings import book
    from aftercare.patients import find_patient

    app = _app(ctx, json_output=as_json)
    at = _at(ctx, at_text)
    with app.db() as db:
        booking = book(db, app.planner(), find_patient(db, patient_ident), at,
                       course_id=course_id, treatment=treatment)
    _session_out(ctx, booking, "Booked", as_json)


@session_group.command("reschedule")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--at", "at_text", required=True, help="The new time (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def session_reschedule(ctx: click.Context, session_id: int, at_text: str,
                       as_json: bool) -> None:
    """Move a booked SESSION; its pending reminders move with it."""
    from aftercare.bookings import find_session, reschedule

    app = _app(ctx, json_output=as_json)
    at = _at(ctx, at_text)
    with app.db() as db:
        booking = reschedule(db, app.planner(), find_session(db, session_id), at)
    _session_out(ctx, booking, "Moved", as_json)


@session_group.command("cancel")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--reason", help="Why (kept in the patient's history).")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def session_cancel(ctx: click.Context, session_id: int, reason: str | None,
                   as_json: bool) -> None:
    """Cancel a booked SESSION; with none other booked, a rebooking nudge is planned."""
    from aftercare.bookings import cancel, find_session

    app = _app(ctx, json_output=as_json)
    with app.db() as db:
        booking = cancel(db, app.planner(), find_session(db, session_id), reason)
    _session_out(ctx, booking, "Cancelled", as_json)


@session_group.command("no-show")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def session_no_show(ctx: click.Context, session_id: int, as_json: bool) -> None:
    """Record that the patient missed a booked SESSION; plans a rebooking nudge."""
    from aftercare.bookings import cancel, find_session

    app = _app(ctx, json_output=as_json)
    with app.db() as db:
        booking = cancel(db, app.planner(), find_session(db, session_id), no_show=True)
    _session_out(ctx, booking, "Marked missed:", as_json)


@session_group.command("complete")
@click.argument("session_id", metavar="SESSION", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def session_complete(ctx: click.Context, session_id: int, as_json: bool) -> None:
    """The booked SESSION took place: plan its aftercare (same as `enroll`)."""
    from aftercare.bookings import complete, find_session

    app = _app(ctx, json_output=as_json)
    with app.db() as db:
        booking = complete(db, app.planner(), find_session(db, session_id))
    _session_out(ctx, booking, "Completed", as_json)


@cli.group("course")
def course_group() -> None:
    """Show and withdraw courses."""


@course_group.command("show")
@click.argument("course_id", metavar="COURSE", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the course as JSON.")
@click.pass_context
def course_show(ctx: click.Context, course_id: int, as_json: bool) -> None:
    """Show a course and its sessions."""
    from aftercare.bookings import find_course
    from aftercare.courses import course_json

    app = _app(ctx)
    with app.db() as db:
        course = find_course(db, course_id)
        data = course_json(db, course)
        owner = db.get(Patient, course.patient_id)
    if as_json:
        _emit(data)
        return
    tz = zone(owner.timezone) if owner else zone(app.settings.clinic.timezone)
    click.echo(f"Course {course.id}: {course.treatment} for patient {course.patient_id}, "
               f"{course.status}; {course.sessions_planned} session(s) planned, "
               f"{course.spacing_days} days apart")
    for s in data["sessions"]:  # type: ignore[attr-defined]
        local = parse_time(s["at"], tz, "at").astimezone(tz)
        click.echo(f"  session {s['id']:>4}  #{s['number']:<3} {local:%a %Y-%m-%d %H:%M} "
                   f"{local.tzname():<5} {s['status']}")


@course_group.command("withdraw")
@click.argument("course_id", metavar="COURSE", type=int)
@click.option("--reason", help="Why (kept in the patient's history).")
@click.option("--json", "as_json", is_flag=True, help="Print the course as JSON.")
@click.pass_context
def course_withdraw(ctx: click.Context, course_id: int, reason: str | None,
                    as_json: bool) -> None:
    """Stop a course: booked sessions cancelled, nothing pending for it is sent."""
    from aftercare.bookings import find_course
    from aftercare.courses import course_json, withdraw

    app = _app(ctx)
    with app.db() as db:
        course = find_course(db, course_id)
        plan = withdraw(db, app.planner(), course, reason)
        data = course_json(db, course)
    if as_json:
        _emit(data)
    else:
        click.echo(f"Withdrew course {course_id}. Messages: {plan.describe()}.")


@cli.command("timeline")
@click.argument("patient_ident", metavar="PATIENT")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.pass_context
def timeline_command(ctx: click.Context, patient_ident: str, as_json: bool) -> None:
    """PATIENT's sessions and messages, past and future, in the patient's local time."""
    from aftercare.patients import find_patient
    from aftercare.timeline import timeline

    app = _app(ctx)
    now = app.clock()
    with app.db() as db:
        found = find_patient(db, patient_ident)
        courses, entries = timeline(db, found, app.protocols)
    if as_json:
        _emit({"patient_id": found.id, "courses": [
            {"id": c.id, "treatment": c.treatment, "status": c.status,
             "sessions_planned": c.sessions_planned, "spacing_days": c.spacing_days}
            for c in courses], "entries": [e.as_json() for e in entries]})
        return
    tz = zone(found.timezone)
    click.echo(f"Patient {found.id}: {found.name} ({found.timezone}, "
               f"{found.channels.replace(',', '+')})")
    for c in courses:
        click.echo(f"  course {c.id}: {c.treatment}, {c.status}, {c.sessions_planned} "
                   f"session(s) {c.spacing_days} days apart")
    if not entries:
        click.echo("No sessions or messages.")
    marked = False
    for entry in entries:
        if not marked and entry.at > now:
            click.echo(f"---------- now: {now.astimezone(tz):%a %Y-%m-%d %H:%M} ----------")
            marked = True
        local = entry.at.astimezone(tz)
        when = f"{local:%a %Y-%m-%d %H:%M} {local.tzname() or '':<5}"
        if entry.kind == "session":
            click.echo(f"{when} * {entry.label:<24} {entry.status.replace('_', '-')}"
                       f"  [course {entry.course_id}, session id {entry.session_id}]")
            continue
        states = set(entry.statuses.values())
        if len(states) == 1:
            outcome = f"{'+'.join(entry.statuses)} {states.pop()}"
        else:
            outcome = ", ".join(f"{c} {s}" for c, s in entry.statuses.items())
        notes = f"  ({entry.note()})" if entry.notes else ""
        click.echo(f"{when}     {entry.label:<22} {outcome}{notes}")
    if not marked:
        click.echo(f"---------- now: {now.astimezone(tz):%a %Y-%m-%d %H:%M} ----------")


@cli.command("import")
@click.argument("path", metavar="FILE.csv")
@click.option("--skip-invalid", is_flag=True,
              help="Import the good rows and list the bad ones (default: all or nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def import_command(ctx: click.Context, path: str, skip_invalid: bool, as_json: bool) -> None:
    """Enroll a day's completed sessions from the clinic's system (CSV, one row per session)."""
    from pathlib import Path

    from aftercare.csv_import import import_csv

    app = _app(ctx, json_output=as_json)
    bar: Any = None

    def on_row(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="Importing", file=sys.stderr)
            bar.__enter__()
        bar.update(1)

    try:
        report = import_csv(app, Path(path), skip_invalid=skip_invalid, on_row=on_row)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    for problem in report.problems:
        click.echo(f"{'skipped' if skip_invalid else 'error'}: {problem}", err=True)
    if report.problems and not skip_invalid:
        click.echo(f"error: {report.bad_rows} bad row(s); nothing imported. Fix them, or "
                   "use --skip-invalid to import the good rows.", err=True)
        sys.exit(EXIT_USER_ERROR)
    if as_json:
        _emit(report.as_json())
    else:
        click.echo(report.summary())


@cli.command()
def demo() -> None:
    """Play three sample patients' whole timelines in seconds (temporary database)."""
    from aftercare.demo import run_demo

    run_demo(sys.stdout)


def main() -> None:
    """Entry point of the `aftercare` script."""
    cli(obj={})
