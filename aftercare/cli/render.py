"""Every text the CLI prints for people: tables, listings and one-line confirmations.

Each function returns the whole text (lines joined, no final newline); times are shown in
the patient's local time, or the clinic's when the patient is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from aftercare.app import App
from aftercare.cli.views import DispatchCountsJson, EventJson, PatientJson, ProtocolJson
from aftercare.clock import zone
from aftercare.models import Course, Message, Patient, Reply, Session
from aftercare.planning import PlanChanges
from aftercare.preview import PreviewItem
from aftercare.protocols import ProtocolBook
from aftercare.segments import budget, measure, name_of
from aftercare.timeline import Entry, step_label

if TYPE_CHECKING:  # annotations only: `send-due` prints through here and plans nothing
    from aftercare.bookings import Booking
    from aftercare.enrollment import Enrollment


def database_ready(url: str, before: str | None, after: str) -> str:
    """`init`: what migrating did to the schema."""
    if before == after:
        return f"Database {url} is up to date (schema {after})."
    return (f"Database {url} {'created' if before is None else 'upgraded'} "
            f"(schema {before or 'none'} -> {after}).")


def setup_ok(app: App, *, offline: bool) -> str:
    """`check` when nothing is wrong."""
    settings = app.settings
    return (f"ok: database {app.engine.url.render_as_string(hide_password=True)} is at "
            f"this release's schema; protocols: {', '.join(p.key for p in app.protocols)}; "
            f"sms via {settings.sms.provider}; email via {settings.email.provider}"
            + (" (not contacted)" if offline else ""))


def patient_added(patient: Patient) -> str:
    ref = f" (ref {patient.ref})" if patient.ref else ""
    return (f"Added patient {patient.id}{ref}: {patient.name}, "
            f"{patient.channels.replace(',', '+')}, {patient.timezone}, {patient.locale}.")


def patient(data: PatientJson) -> str:
    """`patient show`: the same facts as its JSON, laid out for staff."""
    ref = f", ref {data['ref']}" if data["ref"] else ""
    lines = [f"Patient {data['id']}{ref}: {data['name']}"]
    if data["forgotten_at"]:
        lines.append(f"  forgotten on {data['forgotten_at']}: personal data erased")
    lines.append(f"  phone {data['phone'] or '-'}, email {data['email'] or '-'}")
    lines.append(f"  {data['timezone']}, messages in {data['locale']}")
    for channel in ("sms", "email"):
        state = ("consented" if channel in data["channels"] else "not consented")
        if data["opted_out"][channel]:
            state += f", opted out {data['opted_out'][channel]}"
        contact = "phone" if channel == "sms" else "email"
        if data["invalid"][contact]:
            state += f", {contact} invalid since {data['invalid'][contact]}"
        lines.append(f"  {channel}: {state}{'' if data['reachable'][channel] else ' (not used)'}")
    for course in data["courses"]:
        lines.append(f"  course {course['id']}: {course['treatment']}, {course['status']}")
    return "\n".join(lines)


def patient_updated(patient: Patient, changed: Sequence[str], plan: PlanChanges) -> str:
    if not changed:
        return f"Patient {patient.id} unchanged."
    return f"Updated patient {patient.id}: {', '.join(changed)}. Messages: {plan.describe()}."


def consent(patient: Patient, channel: str, plan: PlanChanges, *, opted_out: bool) -> str:
    what = "opted out of" if opted_out else "opted back in to"
    return f"Patient {patient.id} {what} {channel}. Messages: {plan.describe()}."


def forgotten(patient: Patient, plan: PlanChanges) -> str:
    return (f"Patient {patient.id} forgotten: name, contact data and message texts erased; "
            f"{len(plan.cancelled)} pending message(s) cancelled.")


def enrollment(patient: Patient, result: Enrollment, protocols: ProtocolBook) -> str:
    """`enroll`: what was planned for the session, then the session's messages."""
    already = len(result.messages) - result.created
    summary = (f"Enrolled patient {patient.id} in {result.course.treatment}: course "
               f"{result.course.id}, session {result.session.number} of "
               f"{result.course.sessions_planned}. {result.created} message(s) planned"
               + (f", {already} already planned." if already else "."))
    table = message_table(result.messages, {patient.id: patient},
                          {result.course.id: result.course.treatment}, protocols)
    return f"{summary}\n{table}"


def messages(rows: Sequence[Message], patients: Mapping[int | None, Patient],
             treatments: Mapping[int | None, str], protocols: ProtocolBook) -> str:
    """`messages`: the table, or a line saying there is nothing to list."""
    return message_table(rows, patients, treatments, protocols) if rows else "No messages."


def message_table(rows: Iterable[Message], patients: Mapping[int | None, Patient],
                  treatments: Mapping[int | None, str], protocols: ProtocolBook) -> str:
    """Messages, one a line under a header, send times in each patient's local time."""
    lines = [f"{'ID':>5}  {'PATIENT':<8} {'STEP':<17} {'CHANNEL':<7} {'SEND AFTER (local)':<24}"
             f" {'STATUS':<9} {'TRIES':>5}  DETAIL"]
    for m in rows:
        owner = patients.get(m.patient_id)
        local = m.send_after.astimezone(zone(owner.timezone)) if owner else m.send_after
        when = f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
        flag = f"FLAG: {m.flag}" if m.flag else None
        detail = " | ".join(part for part in (m.provider_id, m.last_error, flag) if part)
        label = step_label(m, treatments.get(m.course_id, ""), protocols)
        lines.append(f"{m.id:>5}  {m.patient_id:<8} {label:<17} {m.channel:<7} {when:<24} "
                     f"{m.status:<9} {m.attempts:>5}  {detail}")
    return "\n".join(lines)


def counts(data: DispatchCountsJson) -> str:
    """`send-due`: "4 sent, 0 failed, ...", in the JSON's order."""
    return ", ".join(f"{value} {name}" for name, value in data.items())


def protocols(listed: Iterable[ProtocolJson]) -> str:
    """`protocols`: the same facts as its JSON, each treatment followed by a blank line."""
    lines: list[str] = []
    for item in listed:
        low, high = item["spacing_days"]
        where = ", ".join(item["areas"]) or f"{item['region']} region"
        lines.append(f"{item['key']}: {item['name']} ({where})")
        sessions = f"{item['sessions']} session{'s' if item['sessions'] != 1 else ''}"
        lines.append(f"  course: {sessions}, {low}-{high} days apart; "
                     f"maintenance: {item['maintenance'] or 'not set'}")
        if item["maintenance_cadence"]:
            phases = ", then ".join(
                f"every {phase['every_days']} days"
                + (f" x{phase['times']}" if phase["times"] else " up to the horizon")
                for phase in item["maintenance_cadence"])
            lines.append(f"  maintenance reminders: {phases}")
        for step in item["steps"]:
            once = "" if step["on_sessions"] == "every" else f", after the {step['on_sessions']} session"
            lines.append(f"  - {step['key']:<16} {step['timing']}{once}; valid "
                         f"{step['valid_for_hours']:g}h; {'+'.join(step['channels'])}")
        lines.append("")
    return "\n".join(lines)


def preview(items: Iterable[PreviewItem], locale: str) -> str:
    """`preview`: each message as sent, each SMS with its length, segments and encoding."""
    lines: list[str] = []
    for item in items:
        lines.append(f"=== {item.step} [{item.channel}]  {item.timing}: {item.title}")
        if item.rendered.subject:
            lines.append(f"Subject: {item.rendered.subject}\n")
        lines.append(item.rendered.text)
        if item.channel == "sms":
            size = measure(item.rendered.text)
            over = " OVER BUDGET" if size.segments > budget(locale) else ""
            lines.append(f"({len(item.rendered.text)} characters, {size.describe()}{over})")
            if size.forcing_ucs2:
                lines.append("UCS-2 because of: " + ", ".join(map(name_of, size.forcing_ucs2)))
        lines.append("")
    return "\n".join(lines)


def session_change(booking: Booking, verb: str, tz: tzinfo) -> str:
    """The `session` commands: which session, when, and what happened to its messages."""
    local = booking.session.at.astimezone(tz)
    return (f"{verb} session {booking.session.id} (session {booking.session.number} of "
            f"{booking.course.treatment} course {booking.course.id}) at "
            f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}. Messages: "
            f"{booking.changes.describe()}.")


def course(course: Course, sessions: Iterable[Session], tz: tzinfo) -> str:
    """`course show`: the course, then each session in time order."""
    lines = [f"Course {course.id}: {course.treatment} for patient {course.patient_id}, "
             f"{course.status}; {course.sessions_planned} session(s) planned, "
             f"{course.spacing_days} days apart"]
    for s in sessions:
        local = s.at.astimezone(tz)
        lines.append(f"  session {s.id:>4}  #{s.number:<3} {local:%a %Y-%m-%d %H:%M} "
                     f"{local.tzname():<5} {s.status}" + _checkin(s))
    return "\n".join(lines)


def withdrawn(course: Course, plan: PlanChanges) -> str:
    return f"Withdrew course {course.id}. Messages: {plan.describe()}."


def timeline(patient: Patient, courses: Iterable[Course], entries: Sequence[Entry],
             now: datetime) -> str:
    """`timeline`: courses, then sessions and messages in the patient's time, a line at now."""
    tz = zone(patient.timezone)
    now_line = f"---------- now: {now.astimezone(tz):%a %Y-%m-%d %H:%M} ----------"
    lines = [f"Patient {patient.id}: {patient.name} ({patient.timezone}, "
             f"{patient.channels.replace(',', '+')})"]
    for c in courses:
        lines.append(f"  course {c.id}: {c.treatment}, {c.status}, {c.sessions_planned} "
                     f"session(s) {c.spacing_days} days apart")
    if not entries:
        lines.append("No sessions or messages.")
    marked = False
    for entry in entries:
        if not marked and entry.at > now:
            lines.append(now_line)
            marked = True
        local = entry.at.astimezone(tz)
        when = f"{local:%a %Y-%m-%d %H:%M} {local.tzname() or '':<5}"
        if entry.kind == "session":
            lines.append(f"{when} * {entry.label:<24} {entry.status.replace('_', '-')}"
                         f"  [course {entry.course_id}, session id {entry.session_id}]"
                         + (f"  ({'; '.join(entry.notes.values())})" if entry.notes else ""))
            continue
        states = set(entry.statuses.values())
        if len(states) == 1:
            outcome = f"{'+'.join(entry.statuses)} {states.pop()}"
        else:
            outcome = ", ".join(f"{c} {s}" for c, s in entry.statuses.items())
        notes = f"  ({entry.note()})" if entry.notes else ""
        lines.append(f"{when}     {entry.label:<22} {outcome}{notes}")
    if not marked:
        lines.append(now_line)
    return "\n".join(lines)


def inbox(rows: Sequence[Reply], patients: Mapping[int | None, Patient], clinic_tz: str) -> str:
    """`inbox`: one line per reply, urgent first; the text shortened to fit a terminal."""
    if not rows:
        return "No replies waiting."
    lines = [f"{'ID':>5}  {'TRIAGE':<8} {'STATUS':<13} {'RECEIVED (local)':<22} {'PATIENT':<24} TEXT"]
    for reply in rows:
        owner = patients.get(reply.patient_id)
        local = reply.received_at.astimezone(zone(owner.timezone if owner else clinic_tz))
        who = f"{owner.id} {owner.name}" if owner else f"unknown {reply.from_number or ''}"
        text = " ".join((reply.body or "").split())
        lines.append(f"{reply.id:>5}  {reply.triage or '-':<8} {reply.status:<13} "
                     f"{local:%Y-%m-%d %H:%M} {local.tzname() or '':<5} {who[:24]:<24} "
                     f"{text[:60] + ('...' if len(text) > 60 else '')}")
    return "\n".join(lines)


def _checkin(session: Session) -> str:
    """A session's check-in answer and flag, for staff, or nothing."""
    parts = [part for part in (session.checkin, session.flag and f"FLAG: {session.flag}") if part]
    return f"  ({'; '.join(parts)})" if parts else ""


def history(events: Sequence[EventJson], clinic_tz: str) -> str:
    """`patient history`: one line per change, oldest first, with who made it."""
    if not events:
        return "No history yet."
    tz = zone(clinic_tz)
    lines = []
    for event in events:
        local = datetime.fromisoformat(event["at"] or "").astimezone(tz)
        detail = f"  {event['detail']}" if event["detail"] else ""
        lines.append(f"{local:%Y-%m-%d %H:%M} {local.tzname() or '':<5} {event['kind']:<22} "
                     f"by {event['by'] or '-'}{detail}")
    return "\n".join(lines)
