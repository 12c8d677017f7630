"""The plan: which messages a course should have pending, kept true whenever anything changes.

Every change (a session completed, booked, moved, cancelled or missed; a course withdrawn;
a patient updated, opted out or forgotten) ends in `replan`, which computes what should be
pending from the course as it now stands and brings the message rows in line: it plans
what is missing, moves what was timed from a session that moved, cancels what no longer
applies and revives what applies again. Rows already sent, failed or expired never change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.clock import Clock, zone
from aftercare.config import Settings
from aftercare.errors import UserError
from aftercare.history import record
from aftercare.models import (
    LIVE_SESSIONS,
    Course,
    CourseStatus,
    Message,
    MessageStatus,
    Patient,
    Session,
    SessionStatus,
)
from aftercare.protocols import Protocol, ProtocolBook, Step
from aftercare.queries import AnySession, courses_of, sessions_of
from aftercare.quiet_hours import QuietHours
from aftercare.reachability import routes

Key = tuple[int, str, int, str]  # session id, step, occurrence, channel
# The statuses replan may change (move, cancel, revive); every other row stays as it is.
CHANGEABLE = (MessageStatus.PENDING, MessageStatus.CANCELLED)


@dataclass(frozen=True)
class Planner:
    """What planning needs to know: the protocols, the clinic's hours and horizon, the time."""

    protocols: ProtocolBook
    quiet: QuietHours
    horizon: timedelta
    clock: Clock

    @classmethod
    def from_settings(cls, settings: Settings, protocols: ProtocolBook, clock: Clock) -> Planner:
        messaging = settings.messaging
        return cls(protocols, messaging.quiet_hours,
                   timedelta(days=messaging.maintenance_horizon_days), clock)


@dataclass
class PlanChanges:
    """What one `replan` did to the message rows."""

    created: list[Message] = field(default_factory=list)
    moved: list[Message] = field(default_factory=list)
    cancelled: list[Message] = field(default_factory=list)
    revived: list[Message] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{len(rows)} {name}" for name, rows in (
            ("planned", self.created), ("moved", self.moved), ("cancelled", self.cancelled),
            ("revived", self.revived)) if rows]
        return ", ".join(parts) or "no message changed"

    def merge(self, other: PlanChanges) -> None:
        for name in ("created", "moved", "cancelled", "revived"):
            getattr(self, name).extend(getattr(other, name))


@dataclass(frozen=True)
class _Want:
    session: AnySession
    step: Step
    occurrence: int
    channel: str
    planned_at: datetime


def replan(db: DbSession, planner: Planner, course: Course, reason: str) -> PlanChanges:
    """Bring the course's pending messages in line with its sessions and its patient.

    `reason` is recorded on every message it cancels or moves. Flushes, does not commit:
    the caller commits the change and its consequences together.
    """
    now = planner.clock()
    patient = db.get(Patient, course.patient_id)
    assert patient is not None
    sessions = sessions_of(db, course)
    # Only rows this may change are locked, in id order, so that a dispatcher on
    # PostgreSQL (SKIP LOCKED) cannot claim one meanwhile, and two replans (or a replan
    # beside a dispatcher holding its own `sending` row) take locks in one order and never
    # deadlock. A row that left pending/cancelled before its lock is not among them: it
    # is read below as it is, only to know its key is taken. SQLite's BEGIN IMMEDIATE
    # already serialises all of this.
    locked = {m.id for m in db.exec(
        select(Message).where(Message.course_id == course.id,
                              col(Message.status).in_(CHANGEABLE))
        .order_by(col(Message.id)).with_for_update()
        .execution_options(populate_existing=True)).all()}
    rows = {(m.session_id, m.step, m.occurrence, m.channel): m for m in db.exec(
        select(Message).where(Message.course_id == course.id)).all()}
    changes = _reconcile(planner, course, patient, sessions, rows, locked, reason, now)
    db.add(course)
    for row in (*changes.created, *changes.moved, *changes.revived, *changes.cancelled):
        db.add(row)
    db.flush()
    _record(db, course, changes, reason, now)
    return changes


def _reconcile(planner: Planner, course: Course, patient: Patient, sessions: list[Session],
               rows: dict[Key, Message], locked: set[int | None], reason: str,
               now: datetime, make: Callable[..., Message] = Message) -> PlanChanges:
    """The heart of `replan` on rows already read: changes `rows` (and the course's status)
    in memory and returns what it did; new rows (built by `make`) are in `created`, not
    yet stored."""
    protocol = planner.protocols.get(course.treatment)
    _settle_status(course, sessions)
    wants: dict[Key, _Want] = {}
    if _closed(course, patient) is None:
        wants = {(w.session.id or 0, w.step.key, w.occurrence, w.channel): w
                 for w in _wanted(planner, protocol, course, patient, sessions)}
    _follow_moves(rows, sessions, protocol, locked)
    tz = zone(patient.timezone)
    changes = PlanChanges()
    for key, want in wants.items():
        row = rows.get(key)
        if row is not None and row.id not in locked:
            continue  # sending, sent, failed or expired: never changed here
        # A cancelled message comes back only inside its own window: a 48-hour check
        # revived on day 4 would be stale.
        window = _window(want, tz, planner.quiet, now,
                         keep_window=row is not None and row.status == MessageStatus.CANCELLED)
        if row is None:
            if window is None:
                continue  # its time has passed: planned late, it would only be noise
            # All three are in the database already (loaded or flushed): their ids are set.
            assert patient.id is not None and course.id is not None and want.session.id is not None
            row = make(patient_id=patient.id, course_id=course.id,
                       session_id=want.session.id, step=want.step.key,
                       occurrence=want.occurrence, channel=want.channel,
                       status=MessageStatus.PENDING, planned_at=want.planned_at,
                       send_after=window[0], expires_at=window[1], created_at=now,
                       updated_at=now)
            changes.created.append(row)
        elif row.status == MessageStatus.PENDING and row.planned_at != want.planned_at:
            if window is None:
                _cancel(row, f"{reason}; too late to be useful now", now)
                changes.cancelled.append(row)
            else:
                row.planned_at, (row.send_after, row.expires_at) = want.planned_at, window
                changes.moved.append(row)
        elif row.status == MessageStatus.CANCELLED and window is not None:
            row.status, row.last_error = MessageStatus.PENDING, None
            row.planned_at, (row.send_after, row.expires_at) = want.planned_at, window
            changes.revived.append(row)
        else:
            continue
        row.updated_at = now
    for key, row in rows.items():
        if row.status == MessageStatus.PENDING and key not in wants and row.id in locked:
            _cancel(row, reason, now)
            changes.cancelled.append(row)
    return changes


def replan_patient(db: DbSession, planner: Planner, patient: Patient,
                   reason: str) -> PlanChanges:
    """`replan` every course of the patient (after a change to the patient themselves)."""
    changes = PlanChanges()
    for course in courses_of(db, patient.id):
        changes.merge(replan(db, planner, course, reason))
    return changes


def _follow_moves(rows: dict[Key, Message], sessions: list[Session], protocol: Protocol,
                  locked: set[int | None]) -> None:
    """Pending reminders of a session that moved become the reminders of its new time."""
    moves = {s.id: s.moves for s in sessions}
    anchored = {step.key for step in protocol.steps_for("next_session")}
    for key, row in list(rows.items()):
        current = moves.get(row.session_id, 0)
        if row.status == MessageStatus.PENDING and row.id in locked and row.step in anchored \
                and row.occurrence < current \
                and (row.session_id, row.step, current, row.channel) not in rows:
            del rows[key]
            row.occurrence = current
            rows[(row.session_id, row.step, current, row.channel)] = row


def _settle_status(course: Course, sessions: Iterable[Session]) -> None:
    """A course is completed once its planned sessions are done; maintenance then follows."""
    if course.status == CourseStatus.WITHDRAWN:
        return
    done = [s.number for s in sessions if s.status == SessionStatus.COMPLETED]
    finished = bool(done) and max(done) >= course.sessions_planned
    course.status = CourseStatus.COMPLETED if finished else CourseStatus.ACTIVE


def _wanted(planner: Planner, protocol: Protocol, course: Course, patient: Patient,
            sessions: Sequence[AnySession], only: str | None = None) -> Iterable[_Want]:
    """Every message the course should have, whether or not its time has passed; `only`:
    just those of the step with that key (each step's wants never depend on another's)."""
    tz = zone(patient.timezone)
    # A step's routes are the patient's, the same for every session: asked once a step.
    channels: dict[str, list[str]] = {}

    def each(session: AnySession, steps: list[Step], moment: datetime,
             occurrence: int = 0) -> Iterable[_Want]:
        for step in steps:
            if step.key not in channels:
                channels[step.key] = routes(step.channels, patient)
            for channel in channels[step.key]:
                yield _Want(session, step, occurrence, channel, step.planned_at(moment, tz))

    def current(steps: list[Step], session: AnySession) -> list[Step]:
        return [step for step in steps if not superseded(step, session, sessions)]

    def steps_for(anchor: str) -> list[Step]:
        return [step for step in protocol.steps_for(anchor) if only in (None, step.key)]

    live = [s for s in sessions if s.status in LIVE_SESSIONS]
    completed = [s for s in live if s.status == SessionStatus.COMPLETED]
    booked = [s for s in live if s.status == SessionStatus.BOOKED]
    for session in completed:
        steps = [s for s in steps_for("session")
                 if s.applies_to(session.number, course.sessions_planned)]
        yield from each(session, current(steps, session), session.at)
    for session in booked:
        yield from each(session, current(steps_for("next_session"), session),
                        session.at, session.moves)
    if not completed:
        return
    last = completed[-1]
    if last.number < course.sessions_planned:
        due = last.at + timedelta(days=course.spacing_days)
        yield from each(last, current(steps_for("rebooking"), last), due)
    elif protocol.maintenance is not None:
        steps = current(steps_for("maintenance"), last)
        for occurrence, offset in enumerate(protocol.maintenance.offsets(planner.horizon), 1):
            yield from each(last, steps, last.at + offset, occurrence)


def superseded(step: Step, session: AnySession, sessions: Iterable[AnySession]) -> bool:
    """Whether `step` of `session` is moot (Step.supersedable) because a later session of
    the course (among `sessions`) is booked or done."""
    return step.supersedable and any(s.at > session.at and s.status in LIVE_SESSIONS
                                     for s in sessions)


def why_unwanted(db: DbSession, planner: Planner, message: Message, patient: Patient,
                 course: Course, session: AnySession, *,
                 sessions: Sequence[AnySession] | None = None) -> str | None:
    """Why the plan no longer wants `message` sent, or None: the very rule of `replan`
    (`_wanted`), asked again at send time for a row claimed before a change reached it.

    `sessions`: the course's sessions in time order, when the caller read them already.
    """
    closed = _closed(course, patient)
    if closed is not None:
        return closed
    if session.status == SessionStatus.CANCELLED:
        return "session cancelled"
    if session.status == SessionStatus.NO_SHOW:
        return "session missed"
    try:
        protocol = planner.protocols.get(course.treatment)
        step = protocol.step(message.step)
    except (UserError, KeyError):
        return f"step {message.step} is no longer in the {course.treatment} protocol"
    if sessions is None:
        sessions = sessions_of(db, course)
    key = (message.session_id, message.step, message.occurrence, message.channel)
    # The wants of the message's own step only: the same rule, not the course's whole plan.
    if any(key == (w.session.id, w.step.key, w.occurrence, w.channel)
           for w in _wanted(planner, protocol, course, patient, sessions, only=message.step)):
        return None
    # Not in the plan any more; say why as precisely as the plan's pieces allow.
    if superseded(step, session, sessions):
        return "a later session is booked or done"
    channels = routes(step.channels, patient)
    if message.channel not in channels:
        return patient.unreachable_reason(message.channel) or \
            f"this step goes by {' and '.join(channels) or 'no channel'} now"
    if step.anchor == "next_session" and message.occurrence != session.moves:
        return "the session moved; the reminder of its new time replaces this one"
    return "no longer in the plan (the course changed)"


def _closed(course: Course, patient: Patient) -> str | None:
    """Why nothing at all is planned for the course, or None."""
    if course.status == CourseStatus.WITHDRAWN:
        return "course withdrawn"
    if patient.forgotten_at is not None:
        return "patient forgotten"
    return None


def _window(want: _Want, tz: ZoneInfo, quiet: QuietHours, now: datetime, *,
            keep_window: bool = False) -> tuple[datetime, datetime] | None:
    """(send_after, expires_at) for a wanted message, or None when it is too late for it.

    `keep_window`: never past the step's own window (for a message brought back).
    """
    step = want.step
    first = quiet.next_allowed(want.planned_at, tz)
    if first + step.valid_for <= now:
        return None
    deadlines = []
    if keep_window:
        deadlines.append(first + step.valid_for)
    if step.anchor == "next_session":
        # A reminder of a session is worthless once the session has begun.
        deadlines.append(want.session.at)
    deadline = min(deadlines, default=None)
    # Planned late (enrolled late, session moved closer): what is still relevant goes now,
    # with a full window from now.
    send_after = quiet.send_time(max(first, now), deadline, tz)
    if send_after is None:
        return None
    expires_at = send_after + step.valid_for
    return send_after, expires_at if deadline is None else min(expires_at, deadline)


def _cancel(row: Message, reason: str, now: datetime) -> None:
    row.status, row.last_error, row.updated_at = MessageStatus.CANCELLED, reason[:500], now


def _record(db: DbSession, course: Course, changes: PlanChanges, reason: str,
            now: datetime) -> None:
    for kind, detail, session_id, message_id in plan_events(course, changes, reason):
        record(db, now, kind, course.patient_id, detail, course_id=course.id,
               session_id=session_id, message_id=message_id)


def plan_events(course: Course, changes: PlanChanges,
                reason: str) -> list[tuple[str, str, int | None, int | None]]:
    """The history of one `replan`: (kind, detail, session id, message id), in order."""
    events: list[tuple[str, str, int | None, int | None]] = []
    for kind, rows in (("message.moved", changes.moved), ("message.cancelled", changes.cancelled),
                       ("message.revived", changes.revived)):
        events.extend((kind, f"{row.step}/{row.channel}: {reason}", row.session_id, row.id)
                      for row in rows)
    if changes.created:
        events.append(("messages.planned", f"{len(changes.created)} planned: {reason}", None,
                       None))
    return events


# --- planning rows already loaded (bulk import) ----------------------------------------
# The same rule as `replan` (`_reconcile`), for a caller that read a batch of courses with
# their sessions and messages in a few queries and writes the result in bulk.


def replan_loaded(planner: Planner, course: Course, patient: Patient, sessions: list[Session],
                  messages: list[Message], reason: str,
                  make: Callable[..., Message] = Message) -> PlanChanges:
    """`replan` on a course's rows read beforehand (`messages`: all of the course's, ids
    set); changes them in memory. The caller stores `created` and the changed rows, and
    records `plan_events`; `make` builds the new rows. On SQLite the caller's BEGIN
    IMMEDIATE is the lock `replan` takes; elsewhere the caller locks the course's pending
    and cancelled rows first."""
    ordered = sorted(messages, key=lambda m: m.id or 0)
    rows = {(m.session_id, m.step, m.occurrence, m.channel): m for m in ordered}
    locked = {m.id for m in ordered if m.status in CHANGEABLE}
    return _reconcile(planner, course, patient, sessions, rows, locked, reason,
                      planner.clock(), make)
