"""Signed-in browsers: a random token in an HttpOnly cookie, its hash and CSRF token in the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session as DbSession
from sqlmodel import col, delete, select

from aftercare.models import StaffSession, StaffUser


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SignedIn:
    """One request's signed-in staff member, their session, and the one-line notice left
    for this page by the previous action (shown once)."""

    user: StaffUser
    session: StaffSession
    flash: str | None


def start(db: DbSession, user: StaffUser, now: datetime) -> str:
    """A new session for `user`; returns the cookie's token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    db.add(StaffSession(token_hash=_hash(token), user_id=user.id or 0,
                        csrf=secrets.token_urlsafe(32), created_at=now, last_seen_at=now))
    return token


def resume(db: DbSession, token: str, now: datetime, idle: timedelta) -> SignedIn | None:
    """The session of this cookie if it is live (seen within `idle`, its account enabled),
    marked as seen now; None otherwise (an idle one is ended)."""
    if not token:
        return None
    session = db.exec(select(StaffSession).where(StaffSession.token_hash == _hash(token))).first()
    if session is None:
        return None
    user = db.get(StaffUser, session.user_id)
    if user is None or user.disabled_at is not None or now - session.last_seen_at > idle:
        db.delete(session)
        return None
    flash, session.flash = session.flash, None
    session.last_seen_at = now
    db.add(session)
    return SignedIn(user=user, session=session, flash=flash)


def leave_flash(db: DbSession, session_id: int | None, text: str) -> None:
    """A one-line notice for the next page this session shows (e.g. "Patient added")."""
    session = db.get(StaffSession, session_id)
    if session is not None:
        session.flash = text[:500]
        db.add(session)


def csrf_of(db: DbSession, token: str) -> str | None:
    """The CSRF token of this cookie's session, None when there is no such session."""
    return db.exec(select(StaffSession.csrf).where(StaffSession.token_hash == _hash(token))).first()


def end(db: DbSession, token: str) -> None:
    """Sign this browser out."""
    db.exec(delete(StaffSession).where(col(StaffSession.token_hash) == _hash(token)))


def end_idle(db: DbSession, now: datetime, idle: timedelta) -> None:
    """Forget sessions idle longer than `idle` (they could not be resumed anyway)."""
    db.exec(delete(StaffSession).where(col(StaffSession.last_seen_at) < now - idle))
