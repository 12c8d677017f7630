"""Staff accounts for the console: Argon2id passwords, roles, lockout after failed logins."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session as DbSession
from sqlmodel import col, select
from zxcvbn import zxcvbn

from aftercare.errors import UserError
from aftercare.models import StaffRole, StaffSession, StaffUser
from aftercare.patients import normalize_email

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
LOCK_AFTER_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)
ROLES = tuple(r.value for r in StaffRole)
# Each role can do everything the roles before it can.
_RANK = {role: rank for rank, role in enumerate(ROLES)}

# Argon2id with argon2-cffi's defaults (RFC 9106's second recommended setting).
_hasher = PasswordHasher()
# Verifying against this when the email is unknown costs as much as a real check, so the
# time taken does not tell which emails have accounts.
_DUMMY_HASH = _hasher.hash("not a password of anyone's")


def can(role: str, needed: str) -> bool:
    """Whether `role` includes what `needed` may do (admin > clinician > frontdesk)."""
    return _RANK.get(role, -1) >= _RANK[needed]


def check_password(password: str, *, email: str = "", name: str = "") -> None:
    """A UserError unless the password is long enough and not a common or guessable one."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError("password", f"is too short; use at least {MIN_PASSWORD_LENGTH} characters "
                        "(a few unrelated words work well)")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError("password", f"is longer than {MAX_PASSWORD_LENGTH} characters")
    # zxcvbn knows the 30,000 most common passwords and their simple variants.
    verdict = zxcvbn(password, user_inputs=[part for part in (email, name) if part])
    if verdict["score"] < 2:
        raise UserError("password", "is too common or easy to guess; use a few unrelated words")


def _role(text: str) -> str:
    if text not in ROLES:
        raise UserError("role", f"'{text}' is not a role; use {', '.join(ROLES)}")
    return text


def find_user(db: DbSession, email: str) -> StaffUser:
    """The account with this email, or a UserError."""
    user = db.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())).first()
    if user is None:
        raise UserError("email", f"no staff account '{email}'; see `aftercare user list`")
    return user


def add_user(db: DbSession, email: str, name: str, role: str, password: str,
             now: datetime) -> StaffUser:
    """A new staff account; its password is checked, then kept only as a hash."""
    address = normalize_email(email).lower()
    name = " ".join(name.split())
    if not name:
        raise UserError("name", "must not be empty")
    if len(name) > 200:
        raise UserError("name", "is longer than 200 characters")
    _role(role)
    if db.exec(select(StaffUser.id).where(StaffUser.email == address)).first() is not None:
        raise UserError("email", f"'{address}' already has an account; "
                        "use `aftercare user password` to change its password")
    check_password(password, email=address, name=name)
    user = StaffUser(email=address, name=name, role=role, password_hash=_hasher.hash(password),
                     created_at=now)
    db.add(user)
    db.flush()
    return user


def list_users(db: DbSession) -> list[StaffUser]:
    return list(db.exec(select(StaffUser).order_by(col(StaffUser.email))).all())


def set_password(db: DbSession, user: StaffUser, password: str) -> None:
    """A new password; it also lifts a lockout and signs the account out everywhere."""
    check_password(password, email=user.email, name=user.name)
    user.password_hash = _hasher.hash(password)
    user.failed_logins, user.locked_until = 0, None
    db.add(user)
    _end_sessions(db, user)


def set_role(db: DbSession, user: StaffUser, role: str) -> None:
    if _role(role) != StaffRole.ADMIN:
        _keep_an_admin(db, user, "role")
    user.role = role
    db.add(user)


def set_locale(db: DbSession, user: StaffUser, locale: str | None, locales: tuple[str, ...]) -> None:
    """The console's language for this user (None: the clinic's)."""
    if locale is not None and locale not in locales:
        raise UserError("locale", f"'{locale}' is not available; use {', '.join(locales)}")
    user.locale = locale
    db.add(user)


def disable_user(db: DbSession, user: StaffUser, now: datetime) -> None:
    """The account can no longer sign in; its open sessions end at once."""
    if user.disabled_at is None:
        _keep_an_admin(db, user, "status")
        user.disabled_at = now
        db.add(user)
    _end_sessions(db, user)


def enable_user(db: DbSession, user: StaffUser) -> None:
    user.disabled_at, user.failed_logins, user.locked_until = None, 0, None
    db.add(user)


def _end_sessions(db: DbSession, user: StaffUser) -> None:
    for session in db.exec(select(StaffSession).where(StaffSession.user_id == user.id)).all():
        db.delete(session)


class LoginRefused(Exception):
    """Wrong email or password ("wrong": never which of the two), a disabled account
    ("disabled"), or one locked after failures ("locked")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticate(db: DbSession, email: str, password: str, now: datetime) -> StaffUser:
    """The account, if `password` is its password and it may sign in; else LoginRefused.

    The fifth failure in a row locks the account for 15 minutes; the failures are logged
    with the account's id, never the password.
    """
    user = db.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())
                   .with_for_update()).first()
    if user is None:
        _verify(_DUMMY_HASH, password)
        log.warning("console login refused: unknown account")
        raise LoginRefused("wrong")
    if user.locked_until is not None and user.locked_until > now:
        _verify(_DUMMY_HASH, password)  # as long as a real check: the answer's time tells nothing
        log.warning("console login refused: account %s is locked", user.id)
        raise LoginRefused("locked")
    if not _verify(user.password_hash, password):
        _failed(user, now)
        db.add(user)
        raise LoginRefused("wrong")
    if user.disabled_at is not None:
        log.warning("console login refused: account %s is disabled", user.id)
        raise LoginRefused("disabled")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    db.add(user)
    log.info("console login: account %s", user.id)
    return user


def _failed(user: StaffUser, now: datetime) -> None:
    """Count a wrong password; the fifth in a row locks the account (logged, by id only)."""
    user.failed_logins += 1
    if user.failed_logins >= LOCK_AFTER_FAILURES:
        user.locked_until, user.failed_logins = now + LOCK_FOR, 0
        log.warning("console login refused: account %s locked after %d failures", user.id,
                    LOCK_AFTER_FAILURES)
    else:
        log.warning("console login refused: wrong password for account %s (%d in a row)",
                    user.id, user.failed_logins)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def confirm_password(db: DbSession, user: StaffUser, password: str, now: datetime) -> bool:
    """Whether `password` is the signed-in user's own (before a change to the account).
    A wrong one counts as a failed login: the fifth in a row locks the account and signs
    it out everywhere, so a browser left signed in is no way to guess the password."""
    if _verify(user.password_hash, password):
        return True
    _failed(user, now)
    if user.locked_until is not None and user.locked_until > now:
        _end_sessions(db, user)
    db.add(user)
    return False


def change_own_password(db: DbSession, user: StaffUser, new: str, *,
                        keep_session: int | None) -> None:
    """A staff member's new password (after `confirm_password`); their other browsers are
    signed out, the one at `keep_session` stays signed in."""
    check_password(new, email=user.email, name=user.name)
    user.password_hash = _hasher.hash(new)
    user.failed_logins, user.locked_until = 0, None
    db.add(user)
    for session in db.exec(select(StaffSession).where(StaffSession.user_id == user.id)).all():
        if session.id != keep_session:
            db.delete(session)


def names_by_email(db: DbSession, emails: set[str]) -> dict[str, str]:
    """The names of the staff accounts among `emails` (who made a change, who replied)."""
    if not emails:
        return {}
    rows = db.exec(select(StaffUser.email, StaffUser.name).where(col(StaffUser.email).in_(emails)))
    return dict(rows.all())


def active_admins(db: DbSession) -> int:
    """How many admin accounts can sign in (not disabled)."""
    return len(db.exec(select(StaffUser.id).where(StaffUser.role == StaffRole.ADMIN,
                                                  col(StaffUser.disabled_at).is_(None))).all())


def check_admin_change(db: DbSession, acting: StaffUser, user: StaffUser, *,
                       role: str | None = None, disable: bool = False) -> None:
    """Refuse an admin disabling their own account from the console (the last-admin rule
    is kept by `set_role` and `disable_user` themselves, for the CLI too)."""
    if disable and acting.id == user.id:
        raise UserError("status", "you cannot disable your own account; ask another admin")


def _keep_an_admin(db: DbSession, user: StaffUser, field: str) -> None:
    """Refuse what would leave no admin who can sign in (nobody could manage users)."""
    if user.role == StaffRole.ADMIN and user.disabled_at is None and active_admins(db) <= 1:
        raise UserError(field, "this is the last admin who can sign in; make another account "
                        "admin first")
