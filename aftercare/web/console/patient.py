"""Patient: contact details and consent, courses and sessions with their actions, the
timeline of messages, the SMS conversation with a reply box, the history, and forget.

Every action calls the library function the CLI calls, in one unit of work that records
the staff member, and redirects back to the page with a one-line notice; bad input
re-renders the page with status 400 and the error next to its field, nothing changed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from sqlmodel import Session as DbSession
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.bookings import book, cancel, complete, reschedule
from aftercare.clock import parse_time
from aftercare.conversation import Line, conversation
from aftercare.courses import withdraw
from aftercare.enrollment import has_taken_place
from aftercare.errors import UserError
from aftercare.history import events_page
from aftercare.models import Course, CourseStatus, Event, Patient, Session, SessionStatus
from aftercare.notices import queue_staff_reply, sent_or_queued
from aftercare.patients import PatientChanges, set_opt_out, update_patient
from aftercare.privacy import forget
from aftercare.protocols import CHANNELS
from aftercare.staff import names_by_email
from aftercare.timeline import CourseSessions, Entry, courses_with_sessions, entries_of
from aftercare.web.console import i18n
from aftercare.web.console.base import PAGE_SIZE, Page, page, page_param
from aftercare.worklist import role_to_answer

PAGERS = ("tpage", "cpage", "hpage")  # the page numbers of the timeline, conversation, history
FORGET_WORD = "FORGET"  # typed to confirm forgetting, as an alternative to the patient's name

# A step of the work of an action: given the unit of work and the patient, it changes
# things through a library function and says what it did (the notice on the next page).
Work = Callable[[DbSession, Patient], str]


@dataclass
class PatientPage:
    """Everything the patient page shows, loaded with one query per kind of row."""

    patient: Patient
    courses: list[CourseSessions]
    entries: list[Entry]
    entries_page: int
    entries_more: bool
    now_index: int  # where "now" falls among `entries` (the first later entry)
    lines: list[Line]
    lines_page: int
    lines_more: bool
    events: list[Event]
    events_page: int
    events_more: bool

    @property
    def flagged(self) -> list[tuple[Course, Session]]:
        """Booked sessions a check-in answer flagged for staff (e.g. bruising still there)."""
        return [(c.course, s) for c in self.courses for s in c.sessions
                if s.flag and s.status == SessionStatus.BOOKED]

    @property
    def bookable(self) -> list[Course]:
        """Courses a new session may be booked in (withdrawn ones may not)."""
        return [c.course for c in self.courses if c.course.status != CourseStatus.WITHDRAWN]

    @property
    def session_numbers(self) -> dict[int | None, int]:
        return {s.id: s.number for c in self.courses for s in c.sessions}

    @property
    def treatment_of(self) -> dict[int | None, str]:
        return {c.course.id: c.course.treatment for c in self.courses}


def load_page(db: DbSession, patient: Patient, current: Page) -> PatientPage:
    """The page's rows: courses and sessions, a page of the timeline (by default the one
    holding "now"), of the conversation (latest first) and of the history (newest first)."""
    assert patient.id is not None
    app = current.app
    courses = courses_with_sessions(db, patient.id)
    entries = entries_of(db, patient, courses, app.protocols)
    now = app.clock()
    now_at = next((i for i, e in enumerate(entries) if e.at > now), len(entries))
    pages = max(1, -(-len(entries) // PAGE_SIZE))
    asked = _page_of(current, "tpage")
    entries_page = min(asked, pages) if asked else min(now_at // PAGE_SIZE + 1, pages)
    start = (entries_page - 1) * PAGE_SIZE
    lines_page, events_at = _page_of(current, "cpage") or 1, _page_of(current, "hpage") or 1
    lines, lines_more = conversation(db, patient.id, lines_page, PAGE_SIZE)
    events, events_more = events_page(db, patient.id, events_at, PAGE_SIZE)
    return PatientPage(patient=patient, courses=courses,
                       entries=entries[start:start + PAGE_SIZE], entries_page=entries_page,
                       entries_more=entries_page < pages, now_index=now_at - start,
                       lines=lines, lines_page=lines_page, lines_more=lines_more,
                       events=events, events_page=events_at, events_more=events_more)


def _page_of(current: Page, name: str) -> int:
    """The page number in query parameter `name`, or 0 when not given."""
    return page_param(current.query(name))


def _show(current: Page, patient_id: int, status: int = 200) -> Response:
    with current.db() as db:
        patient = db.get(Patient, patient_id)
        if patient is None:
            raise current.not_found(current._("no patient with this id."))
        view = load_page(db, patient, current)
        reply_role = role_to_answer(db, patient.id)
        staff_names = names_by_email(db, {e.actor for e in view.events if e.actor}
                                     | {line.by for line in view.lines if line.by})
    app, tz = current.app, current.tz
    names = {p.key: p.name for p in app.protocols}
    titles = {(p.key, s.key): s.title for p in app.protocols for s in p.steps}
    treatment_of = view.treatment_of

    def step_title(course_id: int | None, label: str) -> str:
        """A step's title in its protocol ("maintenance #2" keeps its number)."""
        key, _sep, occurrence = label.partition(" #")
        title = titles.get((treatment_of.get(course_id, ""), key), key)
        return f"{title} #{occurrence}" if occurrence else title

    def page_link(name: str, number: int) -> str:
        """This patient's page with one section's page changed, the others kept (also
        from a refused form, whose URL is the action's)."""
        params = {k: v for k, v in current.request.query_params.items() if k in PAGERS}
        return f"/patients/{patient_id}?{urlencode({**params, name: str(number)})}"

    # No course yet: nothing is preselected, so nobody books a treatment by accident.
    options = [] if view.bookable else [("", current._("Choose a treatment"))]
    options += [(str(c.id), current._("%(treatment)s, course %(id)s") % {
        "treatment": names.get(c.treatment, c.treatment), "id": c.id}) for c in view.bookable]
    options += [(f"new:{key}", current._("A new course of %(treatment)s") % {"treatment": name})
                for key, name in names.items()]
    return current.render(
        "patient.html", status=status, nav="patients", view=view, p=view.patient,
        now=app.clock(), channels=CHANNELS, locales=app.renderer.locales(),
        treatment_names=names, treatment_of=treatment_of,
        session_numbers=view.session_numbers, step_title=step_title,
        course_options=options,
        default_course=str(view.bookable[-1].id) if view.bookable else "",
        clinic_zone=app.settings.clinic.timezone,
        taken_place=lambda s: has_taken_place(s.at, app.clock()),
        local_input=lambda moment: moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
        posted=current.field("form"), page_link=page_link, staff_names=staff_names,
        may_reply=current.may(reply_role))


def _path_id(current: Page) -> int:
    return int(current.request.path_params["id"])


def _owner_of_patient(current: Page) -> Callable[[DbSession], Patient]:
    def find(db: DbSession) -> Patient:
        patient = db.get(Patient, _path_id(current))
        if patient is None:
            raise current.not_found(current._("no patient with this id."))
        return patient
    return find


def _session(db: DbSession, current: Page) -> tuple[Session, Patient]:
    """The session named in the path and its patient (404 if there is none)."""
    session = db.get(Session, _path_id(current))
    course = db.get(Course, session.course_id) if session is not None else None
    patient = db.get(Patient, course.patient_id) if course is not None else None
    if session is None or patient is None:
        raise current.not_found(current._("no session with this id."))
    return session, patient


def _act(current: Page, owner: Callable[[DbSession], Patient], work: Work,
         fields: Mapping[str, str] | None = None,
         after_commit: Callable[[], str] | None = None, anchor: str = "") -> Response:
    """Run `work` in one unit of work recording the staff member, then back to the page
    with its notice; a UserError re-renders the page (400, nothing changed) with the error
    next to its field (renamed through `fields`, e.g. "at" -> "at-12" for one session).
    `after_commit` runs once the work is committed, and its notice replaces the work's."""
    patient_id: int | None = None
    try:
        with current.db() as db:
            patient = owner(db)
            patient_id = patient.id
            if patient.forgotten_at is not None:
                raise UserError("patient", current._(
                    "This patient was forgotten: nothing about them can be changed."))
            flash = work(db, patient)
    except UserError as error:
        assert patient_id is not None  # `owner` answers 404, not a UserError
        current.refuse(UserError((fields or {}).get(error.field, error.field), error.problem))
        return _show(current, patient_id, status=400)
    if after_commit is not None:
        flash = after_commit()
    return current.redirect(f"/patients/{patient_id}{anchor}", flash)


def _time(current: Page, name: str, field: str) -> datetime:
    """The datetime-local field `name` in UTC, read in the clinic's time zone."""
    text = current.field(name)
    if not text:
        raise UserError(field, current._("Choose a date and a time."))
    return parse_time(text, current.tz, field)


def _shown_time(current: Page, moment: datetime) -> str:
    return i18n.when(current.lang, current.tz)(moment)


@page()
def patient_page(current: Page) -> Response:
    """The patient page."""
    return _show(current, _path_id(current))


@page()
def save_details(current: Page) -> Response:
    """Change the patient's contact details, language, time zone and consented channels."""
    chosen = [c for c in CHANNELS if current.field(f"channel_{c}")]
    changes = PatientChanges(
        name=current.field("name"), phone=current.field("phone"), email=current.field("email"),
        timezone=current.field("timezone"), locale=current.field("locale"),
        channels=",".join(chosen), ref=current.field("ref"))

    def work(db: DbSession, patient: Patient) -> str:
        app = current.app
        changed, _plan = update_patient(db, app.planner(), patient, changes,
                                        country=app.settings.clinic.country,
                                        locales=app.renderer.locales())
        return current._("Details saved.") if changed else current._("Nothing was changed.")

    return _act(current, _owner_of_patient(current), work)


@page()
def set_consent(current: Page) -> Response:
    """Opt the patient out of a channel, or back in."""
    channel, choice = current.field("channel"), current.field("choice")

    def work(db: DbSession, patient: Patient) -> str:
        if choice not in ("out", "in"):
            raise UserError("channel", current._("Choose to opt out or to opt in."))
        set_opt_out(db, current.app.planner(), patient, channel, opted_out=choice == "out")
        notices = {("sms", "out"): current._("The patient is opted out of SMS."),
                   ("sms", "in"): current._("The patient is opted in to SMS again."),
                   ("email", "out"): current._("The patient is opted out of email."),
                   ("email", "in"): current._("The patient is opted in to email again.")}
        return notices[(channel, choice)]

    return _act(current, _owner_of_patient(current), work, {"channel": "consent"})


def _course_choice(current: Page, value: str) -> tuple[int | None, str | None]:
    """The booking form's course: an id of the patient's, or "new:KEY" for a treatment."""
    if value.startswith("new:"):
        return None, value[4:]
    if value.isdigit():
        return int(value), None
    raise UserError("course", current._("Choose a course or a treatment."))


@page()
def book_session(current: Page) -> Response:
    """Book a session (in a course of the patient's, or a new one of a treatment)."""

    def work(db: DbSession, patient: Patient) -> str:
        at = _time(current, "at", "at")
        course_id, treatment = _course_choice(current, current.field("course"))
        booking = book(db, current.app.planner(), patient, at, course_id=course_id,
                       treatment=treatment)
        return current._("Session booked for %(when)s.") % {
            "when": _shown_time(current, booking.session.at)}

    return _act(current, _owner_of_patient(current), work, {"treatment": "course"})


def _session_action(current: Page, act: Callable[[DbSession, Session], str]) -> Response:
    """An action on one session: its errors show next to that session's fields."""
    sid = _path_id(current)
    found: dict[str, Session] = {}

    def owner(db: DbSession) -> Patient:
        found["session"], patient = _session(db, current)
        return patient

    def work(db: DbSession, patient: Patient) -> str:
        return act(db, found["session"])

    return _act(current, owner, work, {"at": f"at-{sid}", "session": f"session-{sid}",
                                       "reason": f"reason-{sid}"})


@page()
def reschedule_session(current: Page) -> Response:
    """Move a booked session; its reminders move with it."""

    def act(db: DbSession, session: Session) -> str:
        at = _time(current, "at", "at")
        booking = reschedule(db, current.app.planner(), session, at)
        return current._("Session moved to %(when)s.") % {
            "when": _shown_time(current, booking.session.at)}

    return _session_action(current, act)


@page()
def cancel_session(current: Page) -> Response:
    """Cancel a booked session, with a reason kept in the history."""

    def act(db: DbSession, session: Session) -> str:
        cancel(db, current.app.planner(), session, current.optional("reason"))
        return current._("Session cancelled.")

    return _session_action(current, act)


@page()
def no_show_session(current: Page) -> Response:
    """Record that the patient did not come to a booked session."""

    def act(db: DbSession, session: Session) -> str:
        cancel(db, current.app.planner(), session, no_show=True)
        return current._("Session marked as a no-show.")

    return _session_action(current, act)


@page()
def complete_session(current: Page) -> Response:
    """The booked session took place: plan its aftercare."""

    def act(db: DbSession, session: Session) -> str:
        complete(db, current.app.planner(), session)
        return current._("Session recorded as completed; its aftercare is planned.")

    return _session_action(current, act)


@page()
def withdraw_course(current: Page) -> Response:
    """Stop a course: its booked sessions are cancelled and nothing pending is sent."""
    found: dict[str, Course] = {}

    def owner(db: DbSession) -> Patient:
        course = db.get(Course, _path_id(current))
        patient = db.get(Patient, course.patient_id) if course is not None else None
        if course is None or patient is None:
            raise current.not_found(current._("no course with this id."))
        found["course"] = course
        return patient

    def work(db: DbSession, patient: Patient) -> str:
        withdraw(db, current.app.planner(), found["course"], current.optional("reason"))
        return current._("Course withdrawn; nothing more is sent for it.")

    return _act(current, owner, work)


@page()
def reply(current: Page) -> Response:
    """Send the patient an SMS in staff's own words: stored, committed, then sent."""
    app = current.app
    queued: list[int | None] = []

    def work(db: DbSession, patient: Patient) -> str:
        current.require(role_to_answer(db, patient.id))
        queued.append(queue_staff_reply(db, patient, current.field("text"), app.clock(),
                                        request_key=current.request_key()).id)
        return ""

    def send() -> str:
        # The notice was committed before it is sent (as `aftercare reply`): never lost.
        outcome = sent_or_queued(app, queued[0], random.Random())
        notices = {"sent": current._("Reply sent."),
                   "retrying": current._("The reply could not be sent yet; it will be tried "
                                         "again."),
                   "failed": current._("The reply could not be sent; the conversation "
                                       "shows why.")}
        return notices.get(outcome or "", current._("Reply queued."))

    return _act(current, _owner_of_patient(current), work, {"patient": "text"},
                after_commit=send, anchor="#conversation")


@page("admin")
def forget_patient(current: Page) -> Response:
    """Erase the patient's personal data, once the admin typed the name or FORGET."""
    typed = current.field("confirm")

    def work(db: DbSession, patient: Patient) -> str:
        if typed not in (patient.name, FORGET_WORD):
            raise UserError("confirm", current._(
                "Type the patient's full name or the word FORGET exactly; nothing was erased."))
        forget(db, current.app.planner(), patient)
        return current._("The patient was forgotten: their personal data is erased.")

    return _act(current, _owner_of_patient(current), work)


routes: list[BaseRoute] = [
    Route("/patients/{id:int}", patient_page, methods=["GET"]),
    Route("/patients/{id:int}/details", save_details, methods=["POST"]),
    Route("/patients/{id:int}/consent", set_consent, methods=["POST"]),
    Route("/patients/{id:int}/book", book_session, methods=["POST"]),
    Route("/patients/{id:int}/reply", reply, methods=["POST"]),
    Route("/patients/{id:int}/forget", forget_patient, methods=["POST"]),
    Route("/sessions/{id:int}/reschedule", reschedule_session, methods=["POST"]),
    Route("/sessions/{id:int}/cancel", cancel_session, methods=["POST"]),
    Route("/sessions/{id:int}/no-show", no_show_session, methods=["POST"]),
    Route("/sessions/{id:int}/complete", complete_session, methods=["POST"]),
    Route("/courses/{id:int}/withdraw", withdraw_course, methods=["POST"]),
]
