"""Every JSON shape the CLI prints with `--json`, in one place (README: "--json output").

Times are ISO 8601 in UTC with an explicit offset; absent values are None (null).
These are pure functions of loaded rows: the commands run the queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from aftercare.clock import iso
from aftercare.dispatch import DispatchCounts
from aftercare.models import Course, Event, Message, Notice, Patient, Reply, Session, StaffUser
from aftercare.protocols import CHANNELS, Protocol, describe_timing
from aftercare.timeline import Entry

if TYPE_CHECKING:  # annotations only: `send-due` prints through here and plans nothing
    from aftercare.csv_import import ImportReport
    from aftercare.enrollment import Enrollment


class PatientRefJson(TypedDict):
    id: int | None
    ref: str | None


class CourseRefJson(TypedDict):
    id: int | None
    treatment: str
    status: str


class PatientJson(TypedDict):
    name: str
    phone: str | None
    email: str | None
    timezone: str
    locale: str
    ref: str | None
    id: int | None
    channels: list[str]
    opted_out: dict[str, str | None]  # channel -> when
    invalid: dict[str, str | None]  # "phone"/"email" -> since when
    reachable: dict[str, bool]  # channel -> messages can go out on it now
    forgotten_at: str | None
    created_at: str
    courses: list[CourseRefJson]


class SessionJson(TypedDict):
    id: int | None
    number: int
    at: str
    status: str
    checkin: str | None  # the patient's check-in answer, e.g. "bruising: still_there"
    flag: str | None  # what staff must do about this session, e.g. call to move it


class CourseJson(TypedDict):
    id: int | None
    treatment: str
    status: str
    sessions: list[SessionJson]


class MessageJson(TypedDict):
    id: int | None
    patient_id: int
    step: str
    channel: str
    send_after: str
    status: str
    attempts: int
    provider_id: str | None
    last_error: str | None
    sent_at: str | None
    delivered_at: str | None  # from the provider's delivery receipt
    flag: str | None  # something for staff to look at (e.g. carrier filtering)


# "from" is a Python keyword: the functional form of TypedDict. Only this JSON (never
# the logs) carries the number and the text.
ReplyJson = TypedDict("ReplyJson", {
    "id": int | None, "patient_id": int | None, "received_at": str, "from": str | None,
    "body": str | None, "triage": str | None, "status": str, "alerts": list[str],
    "answer": str | None, "note": str | None})


class PlannedMessageJson(TypedDict):
    id: int | None
    step: str
    channel: str
    send_after: str
    status: str


class EnrollmentJson(TypedDict):
    course_id: int | None
    session_id: int | None
    messages: list[PlannedMessageJson]


class DispatchCountsJson(TypedDict):
    sent: int
    failed: int
    retrying: int
    deferred: int
    expired: int
    cancelled: int


class TimelineCourseJson(TypedDict):
    id: int | None
    treatment: str
    status: str
    sessions_planned: int
    spacing_days: int


class TimelineEntryJson(TypedDict):
    at: str
    kind: str
    course_id: int
    session_id: int
    label: str
    status: str | None  # sessions only
    channels: dict[str, str]  # messages: channel -> status
    notes: dict[str, str]  # messages: channel -> why it was not sent


class TimelineJson(TypedDict):
    patient_id: int | None
    courses: list[TimelineCourseJson]
    entries: list[TimelineEntryJson]


class PhaseJson(TypedDict):
    every_days: int
    times: int | None  # None: repeats up to the horizon


class StepJson(TypedDict):
    key: str
    title: str
    timing: str
    valid_for_hours: float
    channels: list[str]
    on_sessions: str


class ProtocolJson(TypedDict):
    key: str
    name: str
    region: str
    areas: list[str]
    sessions: int
    spacing_days: list[int]
    maintenance: str | None
    maintenance_cadence: list[PhaseJson]
    steps: list[StepJson]


class RowProblemJson(TypedDict):
    line: int
    field: str
    problem: str


class ImportReportJson(TypedDict):
    rows: int
    imported: int
    unchanged: int
    bad_rows: int
    patients_added: int
    patients_updated: int
    messages_planned: int
    problems: list[RowProblemJson]


def patient_ref_json(patient: Patient) -> PatientRefJson:
    """`patient add --json`."""
    return {"id": patient.id, "ref": patient.ref}


def patient_json(patient: Patient, courses: Iterable[Course]) -> PatientJson:
    """`patient show` and `patient update`: contact data, consent, opt-outs and courses."""
    return {
        "name": patient.name, "phone": patient.phone, "email": patient.email,
        "timezone": patient.timezone, "locale": patient.locale, "ref": patient.ref,
        "id": patient.id,
        "channels": patient.channel_list,
        "opted_out": {c: iso(getattr(patient, f"{c}_opted_out_at")) for c in CHANNELS},
        "invalid": {"phone": iso(patient.phone_invalid_at),
                    "email": iso(patient.email_invalid_at)},
        "reachable": {c: patient.unreachable_reason(c) is None for c in CHANNELS},
        "forgotten_at": iso(patient.forgotten_at),
        "created_at": patient.created_at.isoformat(),
        "courses": [{"id": c.id, "treatment": c.treatment, "status": c.status} for c in courses],
    }


def session_json(session: Session) -> SessionJson:
    """A session in `course show` and the `session` commands."""
    return {"id": session.id, "number": session.number, "at": session.at.isoformat(),
            "status": session.status, "checkin": session.checkin, "flag": session.flag}


def course_json(course: Course, sessions: Iterable[Session]) -> CourseJson:
    """`course show` and `course withdraw`: the course and its sessions in time order."""
    return {"id": course.id, "treatment": course.treatment, "status": course.status,
            "sessions": [session_json(s) for s in sessions]}


def message_json(message: Message) -> MessageJson:
    """A message in `messages --json`."""
    return {
        "id": message.id,
        "patient_id": message.patient_id,
        "step": message.step,
        "channel": message.channel,
        "send_after": message.send_after.isoformat(),
        "status": message.status,
        "attempts": message.attempts,
        "provider_id": message.provider_id,
        "last_error": message.last_error,
        "sent_at": iso(message.sent_at),
        "delivered_at": iso(message.delivered_at),
        "flag": message.flag,
    }


def reply_json(reply: Reply, alerts: Iterable[Notice] = ()) -> ReplyJson:
    """A reply in `inbox --json`; `alerts`: who was told about it, e.g. "alert sms sent"."""
    return {"id": reply.id, "patient_id": reply.patient_id,
            "received_at": reply.received_at.isoformat(), "from": reply.from_number,
            "body": reply.body, "triage": reply.triage, "status": reply.status,
            "alerts": [f"{a.kind} {a.channel} {a.status}" for a in alerts],
            "answer": reply.answer, "note": reply.note}


def enrollment_json(result: Enrollment) -> EnrollmentJson:
    """`enroll --json`: the course, the session and every message of that session."""
    return {"course_id": result.course.id, "session_id": result.session.id,
            "messages": [{"id": m.id, "step": m.step, "channel": m.channel,
                          "send_after": m.send_after.isoformat(), "status": m.status}
                         for m in result.messages]}


def dispatch_counts_json(counts: DispatchCounts) -> DispatchCountsJson:
    """`send-due --json`: what the pass did, by outcome."""
    return {"sent": counts.sent, "failed": counts.failed, "retrying": counts.retrying,
            "deferred": counts.deferred, "expired": counts.expired, "cancelled": counts.cancelled}


def timeline_entry_json(entry: Entry) -> TimelineEntryJson:
    return {"at": entry.at.isoformat(), "kind": entry.kind, "course_id": entry.course_id,
            "session_id": entry.session_id, "label": entry.label,
            "status": entry.status or None, "channels": entry.statuses, "notes": entry.notes}


def timeline_json(patient: Patient, courses: Iterable[Course],
                  entries: Iterable[Entry]) -> TimelineJson:
    """`timeline --json`: the patient's courses and every session and message in time order."""
    return {"patient_id": patient.id,
            "courses": [{"id": c.id, "treatment": c.treatment, "status": c.status,
                         "sessions_planned": c.sessions_planned, "spacing_days": c.spacing_days}
                        for c in courses],
            "entries": [timeline_entry_json(e) for e in entries]}


def protocol_json(protocol: Protocol) -> ProtocolJson:
    """A treatment in `protocols --json`: course, maintenance and every step with its timing."""
    maintenance = protocol.maintenance
    return {"key": protocol.key, "name": protocol.name, "region": protocol.region,
            "areas": list(protocol.areas), "sessions": protocol.sessions,
            "spacing_days": list(protocol.spacing_days),
            "maintenance": maintenance.summary if maintenance else None,
            "maintenance_cadence": [{"every_days": phase.every_days, "times": phase.times}
                                    for phase in maintenance.cadence] if maintenance else [],
            "steps": [{"key": s.key, "title": s.title, "timing": describe_timing(s),
                       "valid_for_hours": s.valid_for.total_seconds() / 3600,
                       "channels": list(s.channels), "on_sessions": s.on_sessions}
                      for s in protocol.steps]}


def import_report_json(report: ImportReport) -> ImportReportJson:
    """`import --json`: counts, and every problem with its line."""
    return {"rows": report.rows, "imported": report.imported, "unchanged": report.unchanged,
            "bad_rows": report.bad_rows, "patients_added": report.patients_added,
            "patients_updated": report.patients_updated,
            "messages_planned": report.messages_planned,
            "problems": [{"line": p.line, "field": p.field, "problem": p.problem}
                         for p in report.problems]}


class UserJson(TypedDict):
    email: str
    name: str
    role: str
    disabled: bool
    locked: bool
    last_login_at: str | None


def user_json(user: StaffUser, now: datetime) -> UserJson:
    """A staff account as `user list --json` prints it (never its password hash)."""
    return {"email": user.email, "name": user.name, "role": user.role,
            "disabled": user.disabled_at is not None,
            "locked": user.locked_until is not None and user.locked_until > now,
            "last_login_at": iso(user.last_login_at)}


class EventJson(TypedDict):
    at: str | None
    kind: str
    detail: str
    by: str | None
    course_id: int | None
    session_id: int | None
    message_id: int | None


def event_json(event: Event) -> EventJson:
    """One history event; `by` is a staff member's email, "cli" or "aftercare"."""
    return {"at": iso(event.at), "kind": event.kind, "detail": event.detail, "by": event.actor,
            "course_id": event.course_id, "session_id": event.session_id,
            "message_id": event.message_id}
