"""History: every change to a patient's plan, with its reason, for staff and audits."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.models import Event

SERVICE = "aftercare"  # the service acting on its own: a STOP, a receipt, a planned send


def actor_of(db: DbSession) -> str:
    """Who this unit of work acts for (a staff member's email, "cli"), set by `App.db`."""
    return str(db.info.get("actor") or SERVICE)


def record(db: DbSession, at: datetime, kind: str, patient_id: int | None, detail: str = "",
           *, course_id: int | None = None, session_id: int | None = None,
           message_id: int | None = None) -> None:
    """Add one event to the patient's history (committed with the change it describes),
    with who made it."""
    assert patient_id is not None
    db.add(Event(at=at, patient_id=patient_id, course_id=course_id, session_id=session_id,
                 message_id=message_id, kind=kind, detail=detail[:500], actor=actor_of(db)))


def events_of(db: DbSession, patient_id: int) -> list[Event]:
    """The patient's history, oldest first."""
    return list(db.exec(select(Event).where(Event.patient_id == patient_id)
                        .order_by(col(Event.at), col(Event.id))).all())


def events_page(db: DbSession, patient_id: int, page_number: int,
                size: int) -> tuple[list[Event], bool]:
    """One page of the patient's history, newest first, and whether older events follow."""
    rows = list(db.exec(select(Event).where(Event.patient_id == patient_id)
                        .order_by(col(Event.at).desc(), col(Event.id).desc())
                        .offset((max(page_number, 1) - 1) * size).limit(size + 1)).all())
    return rows[:size], len(rows) > size
