"""The demo: sample patients on a throw-away database, dispatched over a simulated clock."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from aftercare.app import App
from aftercare.clock import zone
from aftercare.config import ClinicConfig, DatabaseConfig, Settings
from aftercare.db import migrate
from aftercare.dispatch import DispatchCounts
from aftercare.enrollment import SessionVisit, enroll
from aftercare.outbox import next_due
from aftercare.patients import NewPatient, add_patient

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
        dispatcher = app.dispatcher(random.Random(0))
        pending = sorted(((_session_time(s, day), s) for s in SAMPLES), key=lambda p: p[0])
        total = DispatchCounts()
        out.write(f"aftercare demo: {CLINIC.name}, quiet hours "
                  f"{settings.messaging.quiet_start:%H:%M}-{settings.messaging.quiet_end:%H:%M} "
                  "in each patient's local time.\nA simulated clock plays every message at the "
                  "time it would reach the patient.\n\n")
        while True:
            due = next_due(app.engine)
            if pending and (due is None or pending[0][0] <= due):
                at, sample = pending.pop(0)
                clock.now = at + timedelta(minutes=30)
                _enroll(app, sample, at, out)
                continue
            if due is None:
                break
            clock.now = max(clock.now, due)
            counts = dispatcher.run_once()
            for name, value in counts.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        out.write("=" * 72 + "\nDemo finished: " + ", ".join(
            f"{v} {k}" for k, v in total.as_dict().items() if v) + ".\n"
            "The demo database was temporary and is gone. Next: `aftercare init`, then "
            "`aftercare patient add` (see README.md).\n")
        app.engine.dispose()
        return total


def _session_time(sample: _Sample, day: datetime) -> datetime:
    tz = zone(sample.patient.timezone or CLINIC.timezone)
    local_day = day.astimezone(tz).date()
    return datetime.combine(local_day, sample.session_local, tzinfo=tz).astimezone(UTC)


def _enroll(app: App, sample: _Sample, at: datetime, out: TextIO) -> None:
    settings = app.settings
    with app.db() as db:
        patient = add_patient(db, sample.patient, country=CLINIC.country,
                              default_timezone=CLINIC.timezone,
                              default_locale=settings.messaging.default_locale,
                              locales=app.renderer.locales(), clock=app.clock)
        next_at = at + timedelta(days=sample.next_in_days) if sample.next_in_days else None
        result = enroll(db, app.planner(), patient,
                        SessionVisit("cellulite", at, area=sample.area, next_session_at=next_at))
    local = at.astimezone(zone(patient.timezone))
    booked = f"; next session booked {next_at:%d %b}" if next_at else "; no next session booked"
    out.write("=" * 72 + f"\n{local:%a %d %b %H:%M} {local.tzname()}  {patient.name} "
              f"({patient.channels.replace(',', ' + ')}) enrolled after cellulite session 1 "
              f"({sample.area}){booked}: {result.created} messages planned.\n")
