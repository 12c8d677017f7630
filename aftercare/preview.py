"""Preview: every step of a protocol rendered for a sample patient, without a database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from aftercare.clock import zone
from aftercare.config import Settings
from aftercare.models import Course, Patient, Session, SessionStatus
from aftercare.protocols import Protocol, describe_timing
from aftercare.rendering import Rendered, Renderer, message_context


@dataclass(frozen=True)
class PreviewItem:
    """One step on one channel, as a sample patient would receive it."""

    step: str
    title: str
    timing: str
    channel: str
    rendered: Rendered


def preview(settings: Settings, renderer: Renderer, protocol: Protocol, locale: str,
            channel: str | None = None, *, today: datetime) -> list[PreviewItem]:
    """Render each step of `protocol` in `locale` on `channel` (default: every channel)."""
    tz = settings.clinic.timezone
    patient = Patient(name="Jane Doe", phone="+12125550123", email="jane@example.com",
                      timezone=tz, locale=locale, channels="sms,email", created_at=today)
    course = Course(patient_id=0, treatment=protocol.key, area=(protocol.areas or ("",))[0],
                    sessions_planned=protocol.sessions, created_at=today)
    local_day = today.astimezone(zone(tz)).date()
    session_at = datetime.combine(local_day, time(10, 30), tzinfo=zone(tz))
    session = Session(course_id=0, number=1, at=session_at, status=SessionStatus.COMPLETED,
                      created_at=today)
    booked = Session(course_id=0, number=2, at=session_at + timedelta(days=protocol.spacing_days[0]),
                     status=SessionStatus.BOOKED, created_at=today)
    items = []
    for step in protocol.steps:
        for name in step.channels:
            if channel is not None and name != channel:
                continue
            context = message_context(settings.clinic, patient, protocol, course, session,
                                      booked, first_sms=step is protocol.steps[0])
            items.append(PreviewItem(step.key, step.title, describe_timing(step), name,
                                     renderer.render(locale, step.key, name, context)))
    return items

