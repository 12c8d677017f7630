"""The outbox: what will be sent, to whom, when; and what happened to what was sent."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, and_, or_
from sqlmodel import Session as DbSession
from sqlmodel import col, func, select

from aftercare.errors import UserError
from aftercare.models import Message, MessageStatus
from aftercare.protocols import CHANNELS
from aftercare.worklist import Day, day_of


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


# How the console's message list may be ordered: the newest planned first (the default),
# or the soonest due first.
SORTS = ("newest", "due")


@dataclass(frozen=True)
class MessageFilter:
    """What the console's message list shows: each field None for "any"."""

    status: str | None = None
    channel: str | None = None
    step: str | None = None
    day: Day | None = None  # the clinic's day the message was sent, or is due if not sent
    sort: str = "newest"


def message_filter(*, status: str = "", channel: str = "", step: str = "", day: str = "",
                   sort: str = "", steps: Collection[str], tz: ZoneInfo) -> MessageFilter:
    """The filter for these form values ("" for any), or a UserError naming the bad field."""
    statuses = [s.value for s in MessageStatus]
    if status and status not in statuses:
        raise UserError("status", f"'{status}' is not a message status; use one of "
                        f"{', '.join(statuses)}")
    if channel and channel not in CHANNELS:
        raise UserError("channel", f"'{channel}' is not a channel; use sms or email")
    if step and step not in steps:
        raise UserError("step", f"'{step}' is not a step of any protocol")
    if sort and sort not in SORTS:
        raise UserError("sort", f"'{sort}' is not an order; use {' or '.join(SORTS)}")
    chosen_day = None
    if day:
        try:
            when = date.fromisoformat(day)
        except ValueError:
            raise UserError("day", f"'{day}' is not a date; write e.g. 2026-12-01") from None
        if not 2000 <= when.year <= 2100:
            raise UserError("day", f"'{day}' is not a plausible date; pick a year between 2000 "
                            "and 2100")
        chosen_day = day_of(when, tz)
    return MessageFilter(status=status or None, channel=channel or None, step=step or None,
                         day=chosen_day, sort=sort or "newest")


def message_page(db: DbSession, chosen: MessageFilter, page: int,
                 size: int) -> tuple[list[Message], bool]:
    """One page of the messages `chosen` lets through, and whether another page follows."""
    where: list[ColumnElement[bool]] = []
    if chosen.channel is not None:
        where.append(col(Message.channel) == chosen.channel)
    if chosen.step is not None:
        where.append(col(Message.step) == chosen.step)
    if chosen.day is None:
        if chosen.status is not None:
            where.append(col(Message.status) == chosen.status)
    else:
        start, end = chosen.day.start, chosen.day.end
        sent_that_day = and_(col(Message.sent_at) >= start, col(Message.sent_at) < end)
        # A message's time is when it was sent, else when it is due (as the timeline shows
        # it). Written so SQLite unites two index ranges (sent_at; status and send_after,
        # every status named) instead of reading every row of one status or every unsent
        # row; the status test itself is kept off the index (`|| ''`) for the same reason.
        statuses = [chosen.status] if chosen.status else [s.value for s in MessageStatus]
        where += [or_(sent_that_day, and_(col(Message.status).in_(statuses),
                                          col(Message.send_after) >= start,
                                          col(Message.send_after) < end)),
                  or_(sent_that_day, col(Message.sent_at).is_(None))]
        if chosen.status is not None:
            where.append(col(Message.status).concat("") == chosen.status)
    order = ((col(Message.send_after), col(Message.id)) if chosen.sort == "due"
             else (col(Message.id).desc(),))
    # The page's ids first (sorted from an index, not from whole rows), then their rows.
    ids = (select(col(Message.id)).where(*where).order_by(*order)
           .offset((max(page, 1) - 1) * size).limit(size + 1).subquery())
    rows = list(db.exec(select(Message).join(ids, col(Message.id) == ids.c.id)
                        .order_by(*order)).all())
    return rows[:size], len(rows) > size
