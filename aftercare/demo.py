"""The demo: sample patients on a throw-away database, dispatched over a simulated clock."""

from __future__ import annotations

import io
import random
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import TextIO

from aftercare import notices
from aftercare.app import App, build_channels
from aftercare.clock import system_clock, zone
from aftercare.config import ClinicConfig, DatabaseConfig, Settings
from aftercare.db import migrate
from aftercare.dispatch import DispatchCounts
from aftercare.enrollment import SessionVisit, enroll
from aftercare.models import TriageLevel
from aftercare.outbox import next_due
from aftercare.patients import NewPatient, add_patient, normalize_phone
from aftercare.replies import Incoming, inbox, settle, store
from aftercare.staff import add_user

CLINIC = ClinicConfig(name="Lumiere Aesthetics", phone="+1 212 555 0100",
                      email="care@lumiere.example", emergency_number="911",
                      timezone="America/New_York", country="US")


@dataclass(frozen=True)
class _Sample:
    patient: NewPatient
    session_local: time
    area: str
    next_in_days: int | None


SAMPLES = (
    _Sample(NewPatient("Jane Doe", phone="+1 212 555 0123", email="jane@example.com",
                       timezone="America/New_York", ref="DEMO-1"),
            time(10, 30), "thighs", 14),
    _Sample(NewPatient("Maria Lopez", phone="+1 213 555 0147", timezone="America/Los_Angeles",
                       ref="DEMO-2"),
            time(17, 45), "abdomen", None),
    _Sample(NewPatient("Claire Martin", email="claire@example.com", timezone="Europe/Paris",
                       locale="fr", ref="DEMO-3"),
            time(15, 0), "buttocks", 10),
)


class SimulatedClock:
    """A clock the demo moves forward by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def run_demo(out: TextIO, *, day: datetime | None = None) -> DispatchCounts:
    """Enroll the sample patients on `day` (default today) and play their whole timeline."""
    day = day or datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="aftercare-demo-") as folder:
        settings = Settings(clinic=CLINIC,
                            database=DatabaseConfig(url=f"sqlite:///{Path(folder) / 'demo.db'}"))
        clock = SimulatedClock(day)
        app = App.from_settings(settings, clock=clock, console=out)
        migrate(app.engine)
        out.write(f"aftercare demo: {CLINIC.name}, quiet hours "
                  f"{settings.messaging.quiet_start:%H:%M}-{settings.messaging.quiet_end:%H:%M} "
                  "in each patient's local time.\nA simulated clock plays every message at the "
                  "time it would reach the patient.\n\n")
        events = [_Event(_session_time(s, day), partial(_enroll, sample=s, out=out))
                  for s in SAMPLES]
        total = _play(app, clock, events)
        out.write("=" * 72 + "\nDemo finished: " + ", ".join(
            f"{v} {k}" for k, v in total.as_dict().items() if v) + ".\n"
            "The demo database was temporary and is gone. Next: `aftercare init`, then "
            "`aftercare patient add` (see README.md).\n")
        app.engine.dispose()
        return total


@dataclass(frozen=True)
class _Event:
    """Something the demo does at a moment of its simulated clock."""

    at: datetime
    act: Callable[[App, datetime], None]


def _play(app: App, clock: SimulatedClock, events: list[_Event],
          until: datetime | None = None) -> DispatchCounts:
    """Move the clock through `events` in time order, sending every message as it falls
    due in between; up to `until`, or until nothing is left to send."""
    dispatcher = app.dispatcher(random.Random(0))
    pending = sorted(events, key=lambda e: e.at)
    total = DispatchCounts()
    while True:
        due = next_due(app.engine)
        if until is not None and due is not None and due > until:
            due = None
        if pending and (due is None or pending[0].at <= due):
            event = pending.pop(0)
            event.act(app, event.at)
            continue
        if due is None:
            break
        clock.now = max(clock.now, due)
        counts = dispatcher.run_once()
        for name, value in counts.as_dict().items():
            setattr(total, name, getattr(total, name) + value)
    return total


def _session_time(sample: _Sample, day: datetime) -> datetime:
    tz = zone(sample.patient.timezone or CLINIC.timezone)
    local_day = day.astimezone(tz).date()
    return datetime.combine(local_day, sample.session_local, tzinfo=tz).astimezone(UTC)


def _enroll(app: App, at: datetime, *, sample: _Sample, out: TextIO,
            next_at: datetime | None = None) -> None:
    """Record the sample's session 1 half an hour after it ended, and its next session
    (`next_at`, else `next_in_days` later, if any)."""
    assert isinstance(app.clock, SimulatedClock)
    app.clock.now = at + timedelta(minutes=30)
    settings = app.settings
    with app.db() as db:
        patient = add_patient(db, sample.patient, country=CLINIC.country,
                              default_timezone=CLINIC.timezone,
                              default_locale=settings.messaging.default_locale,
                              locales=app.renderer.locales(), clock=app.clock)
        if next_at is None and sample.next_in_days:
            next_at = at + timedelta(days=sample.next_in_days)
        result = enroll(db, app.planner(), patient,
                        SessionVisit("cellulite", at, area=sample.area, next_session_at=next_at))
    local = at.astimezone(zone(patient.timezone))
    booked = f"; next session booked {next_at:%d %b}" if next_at else "; no next session booked"
    out.write("=" * 72 + f"\n{local:%a %d %b %H:%M} {local.tzname()}  {patient.name} "
              f"({patient.channels.replace(',', ' + ')}) enrolled after cellulite session 1 "
              f"({sample.area}){booked}: {result.created} messages planned.\n")


# ---------------------------------------------------------------------------------------
# `aftercare demo --serve`: the console on a throw-away database where the samples' first
# days have already happened (played on the simulated clock up to now), with replies
# waiting in the inbox, one of them urgent.

# Only for the throw-away demo database; they pass the password policy.
DEMO_PASSWORD = "aftercare demo {role}"


@dataclass(frozen=True)
class DemoLogin:
    """A staff account of the demo console."""

    role: str
    email: str
    name: str

    @property
    def password(self) -> str:
        return DEMO_PASSWORD.format(role=self.role)


DEMO_LOGINS = (
    DemoLogin("frontdesk", "desk@lumiere.example", "Rosa Front"),
    DemoLogin("clinician", "clinician@lumiere.example", "Dr Ines Moreau"),
    DemoLogin("admin", "admin@lumiere.example", "Alex Admin"),
)

# A fourth patient for the console, who writes a routine thank-you.
_SOFIA = NewPatient("Sofia Rossi", phone="+1 646 555 0182", email="sofia@example.com",
                    timezone="America/New_York", ref="DEMO-4")


@dataclass(frozen=True)
class _Story:
    """A sample's session 1 (`days_ago`, at the sample's local time) and its next session
    (days from today and time, in the clinic's time zone), if booked."""

    sample: _Sample
    days_ago: int
    next_session: tuple[int, time] | None


_STORIES = (
    # Jane's session 2 is today: the reminder two days ago asked about bruising, she
    # answered 2 ("still there"), which flags the session for a call.
    _Story(SAMPLES[0], 14, (0, time(16, 0))),
    # Maria had her session yesterday; 25 minutes ago she wrote the urgent reply.
    _Story(SAMPLES[1], 1, None),
    # Claire (email only: no SMS to answer) comes back in four days.
    _Story(SAMPLES[2], 10, (4, time(9, 0))),
    # Sofia, three days after her session, writes a routine thank-you.
    _Story(_Sample(_SOFIA, time(12, 0), "buttocks", None), 3, None),
)
URGENT_REPLY = ("The skin on my tummy is hot and very red since this morning and I think "
                "I have a fever")
ROUTINE_REPLY = "Thank you! See you at my next session."


@dataclass(frozen=True)
class ConsoleDemo:
    """The console demo's app, on its throw-away database, on the real clock from now on."""

    app: App
    patients: int
    waiting: int  # replies waiting for staff
    urgent: int


def console_settings(folder: Path) -> Settings:
    """The demo clinic, with an on-call number (urgent replies alert it), on a file in
    `folder`; console channels only."""
    clinic = ClinicConfig(**{**CLINIC.model_dump(), "on_call_phone": "+12125550199"})
    return Settings(clinic=clinic,
                    database=DatabaseConfig(url=f"sqlite:///{folder / 'demo.db'}"))


def build_console_demo(folder: Path, *, now: datetime | None = None,
                       console: TextIO | None = None) -> ConsoleDemo:
    """The demo's patients and their messages up to `now` (played on a simulated clock,
    what was sent then printed nowhere), replies settled through real triage, one login
    per role; then the app runs on the real clock and prints what it sends to `console`."""
    now = now or datetime.now(UTC)
    settings = console_settings(folder)
    clock = SimulatedClock(now - timedelta(days=30))
    app = App.from_settings(settings, clock=clock, console=io.StringIO())
    migrate(app.engine)
    tz = zone(settings.clinic.timezone)
    today = now.astimezone(tz).date()

    def clinic_time(days: int, at: time) -> datetime:
        return datetime.combine(today + timedelta(days=days), at, tzinfo=tz).astimezone(UTC)

    events: list[_Event] = []
    for story in _STORIES:
        at = _session_time(story.sample, now - timedelta(days=story.days_ago))
        next_at = clinic_time(*story.next_session) if story.next_session else None
        events.append(_Event(at, partial(_enroll, sample=story.sample, out=io.StringIO(),
                                         next_at=next_at)))
    jane, maria, sofia = SAMPLES[0].patient, SAMPLES[1].patient, _SOFIA
    events += [
        # Three hours after the reminder of the day before yesterday, 10:00.
        _Event(clinic_time(-2, time(13, 0)), partial(_reply, phone=jane.phone, body="2")),
        _Event(now - timedelta(hours=3), partial(_reply, phone=sofia.phone, body=ROUTINE_REPLY)),
        _Event(now - timedelta(minutes=25), partial(_reply, phone=maria.phone, body=URGENT_REPLY)),
    ]
    _play(app, clock, events, until=now)
    clock.now = now
    # Nobody acknowledged the urgent reply within escalate_after_minutes: escalated now
    # (printed nowhere), so the console starts quiet.
    notices.run_once(app)
    with app.db() as db:
        for login in DEMO_LOGINS:
            add_user(db, login.email, login.name, login.role, login.password, now)
        waiting = inbox(db)
    # From here on: real time, and what the console sends is printed to `console`.
    app.clock = system_clock
    app.console = console
    app.channels = build_channels(settings, console)
    return ConsoleDemo(app, len(_STORIES), len(waiting),
                       sum(1 for r in waiting if r.triage == TriageLevel.URGENT))


def _reply(app: App, at: datetime, *, phone: str | None, body: str) -> None:
    """A patient's SMS arriving at `at`: stored and settled as the webhook does, and the
    automatic answer sent."""
    assert isinstance(app.clock, SimulatedClock) and phone is not None
    app.clock.now = at
    number = normalize_phone(phone, CLINIC.country)
    with app.db() as db:
        reply = store(db, Incoming(f"SMdemo{at:%Y%m%d%H%M%S}", number, "+12125550100", body), at)
        reply_id = reply.id
    assert reply_id is not None
    settle(app, reply_id, queue=True)
    notices.send_due(app)


def free_port(host: str, wanted: int) -> int:
    """`wanted` if nothing listens there, else a free port the system picks."""
    for port in (wanted, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            found: int = probe.getsockname()[1]
            return found
    raise OSError(f"no free port on {host}")
