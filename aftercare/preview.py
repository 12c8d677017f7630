"""Preview: every step of a protocol rendered for a sample patient, without a database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from aftercare.clock import zone
from aftercare.config import Settings
from aftercare.models import Course, Patient, Session, SessionStatus
from aftercare.protocols import Protocol, Step, describe_timing
from aftercare.rendering import Rendered, Renderer, message_context


@dataclass(frozen=True)
class PreviewItem:
    """One step on one channel, as a sample patient would receive it."""

    step: str
    title: str
    timing: str
    channel: str
    rendered: Rendered


def sample_context(settings: Settings, protocol: Protocol, locale: str, *, today: datetime,
                   first_sms: bool = True, booked: bool = True, first_visit: bool = False,
                   occurrence: int = 0) -> dict[str, Any]:
    """Template variables for a sample patient (Jane Doe) treated today at 10:30."""
    tz = settings.clinic.timezone
    patient = Patient(name="Jane Doe", phone="+12125550123", email="jane@example.com",
                      timezone=tz, locale=locale, channels="sms,email", created_at=today)
    course = Course(patient_id=0, treatment=protocol.key, area=(protocol.areas or ("",))[0],
                    sessions_planned=protocol.sessions, spacing_days=protocol.spacing_days[0],
                    created_at=today)
    local_day = today.astimezone(zone(tz)).date()
    session_at = datetime.combine(local_day, time(10, 30), tzinfo=zone(tz))
    session = Session(course_id=0, number=1, at=session_at, status=SessionStatus.COMPLETED,
                      created_at=today)
    next_session = Session(course_id=0, number=2,
                           at=session_at + timedelta(days=protocol.spacing_days[0]),
                           status=SessionStatus.BOOKED, created_at=today) if booked else None
    return message_context(settings.clinic, patient, protocol, course, session, next_session,
                           first_sms=first_sms, first_visit=first_visit, occurrence=occurrence)


def sample_contexts(settings: Settings, protocol: Protocol, step: Step, locale: str, *,
                    today: datetime) -> Iterator[dict[str, Any]]:
    """Every shape of context `step` can meet in real use, the typical one first."""
    first = step is protocol.steps[0]
    for first_sms in (first, not first):
        if step.anchor == "session":
            for booked in (True, False):
                yield sample_context(settings, protocol, locale, today=today,
                                     first_sms=first_sms, booked=booked)
        elif step.anchor == "next_session":
            for first_visit in (False, True):
                yield sample_context(settings, protocol, locale, today=today,
                                     first_sms=first_sms, first_visit=first_visit)
        else:
            for occurrence in ((1, 4) if step.anchor == "maintenance" else (0,)):
                yield sample_context(settings, protocol, locale, today=today,
                                     first_sms=first_sms, booked=False,
                                     occurrence=occurrence)


def preview(settings: Settings, renderer: Renderer, protocol: Protocol, locale: str,
            channel: str | None = None, *, today: datetime) -> list[PreviewItem]:
    """Render each step of `protocol` in `locale` on `channel` (default: every channel)."""
    items = []
    for step in protocol.steps:
        context = next(sample_contexts(settings, protocol, step, locale, today=today))
        for name in step.channels:
            if channel is None or name == channel:
                items.append(PreviewItem(step.key, step.title, describe_timing(step), name,
                                         renderer.render(locale, step.key, name, context)))
    return items
