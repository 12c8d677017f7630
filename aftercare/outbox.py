"""The outbox: what will be sent, to whom, when; and what happened to what was sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session as DbSession
from sqlmodel import col, func, select

from aftercare.models import Message, MessageStatus


def list_messages(db: DbSession, *, patient_id: int | None = None,
                  status: str | None = None) -> list[Message]:
    """Messages in send order, optionally for one patient and/or one status."""
    query = select(Message).order_by(col(Message.send_after), col(Message.id))
    if patient_id is not None:
        query = query.where(Message.patient_id == patient_id)
    if status is not None:
        query = query.where(Message.status == status)
    return list(db.exec(query).all())


def next_due(engine: Engine) -> datetime | None:
    """When the earliest pending message falls due, or None when nothing is pending."""
    with DbSession(engine) as db:
        return db.exec(select(func.min(Message.send_after))
                       .where(Message.status == MessageStatus.PENDING)).one()
