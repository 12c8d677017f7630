"""Users (admin): staff accounts, on the same functions as `aftercare user`."""

from __future__ import annotations

from sqlmodel import Session as DbSession
from sqlmodel import col, select
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.errors import UserError
from aftercare.models import StaffUser
from aftercare.staff import (
    ROLES,
    add_user,
    check_admin_change,
    disable_user,
    enable_user,
    set_password,
    set_role,
)
from aftercare.web.console.base import PAGE_SIZE, Page, page


def users_page(db: DbSession, page_number: int) -> tuple[list[StaffUser], bool]:
    """Staff accounts by email, a page at a time, and whether another page follows."""
    rows = list(db.exec(select(StaffUser).order_by(col(StaffUser.email))
                        .offset((page_number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all())
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def _list(current: Page, status: int = 200) -> Response:
    with current.db() as db:
        found, more = users_page(db, current.page_number())
    return current.render("users.html", status=status, nav="users", users=found, more=more,
                          page_number=current.page_number(), role_choices=_roles(current),
                          role_names=role_names(current), now=current.app.clock())


def _account(current: Page) -> StaffUser:
    """The account of the URL, or a 404."""
    user_id = current.request.path_params["user_id"]
    with current.db() as db:
        user = db.get(StaffUser, int(user_id)) if user_id.isdigit() else None
    if user is None:
        raise current.not_found(current._("no such staff account"))
    return user


def _detail(current: Page, user: StaffUser, status: int = 200) -> Response:
    return current.render("users_detail.html", status=status, nav="users", account=user,
                          role_choices=_roles(current), role_names=role_names(current),
                          now=current.app.clock(), is_self=user.id == current.user.id)


@page("admin")
def users_list(current: Page) -> Response:
    """Every staff account, and the form to add one."""
    return _list(current)


@page("admin")
def user_add(current: Page) -> Response:
    """Add an account: the CLI's checks (email, name, role, password policy)."""
    try:
        with current.db() as db:
            added = add_user(db, current.field("email"), current.field("name"),
                             current.field("role"), _password(current, "password"),
                             current.app.clock())
    except UserError as error:
        current.refuse(error)
        return _list(current, status=400)
    return current.redirect("/users", current._("Added {email} ({role}).").format(
        email=added.email, role=role_names(current).get(added.role, added.role)))


@page("admin")
def user_detail(current: Page) -> Response:
    """One account: its role, its password, whether it may sign in."""
    return _detail(current, _account(current))


@page("admin")
def user_role(current: Page) -> Response:
    """Give the account another role (never taking the last admin's away)."""
    user = _account(current)
    role = current.field("role")
    try:
        with current.db() as db:
            stored = db.get(StaffUser, user.id)
            assert stored is not None
            check_admin_change(db, current.user, stored, role=role)
            set_role(db, stored, role)
    except UserError as error:
        current.refuse(error)
        return _detail(current, user, status=400)
    # An admin who gave themselves a lesser role can no longer see the users.
    target = "/" if user.id == current.user.id and role != "admin" else f"/users/{user.id}"
    return current.redirect(target, current._("{email} is now {role}.").format(
        email=user.email, role=role_names(current).get(role, role)))


@page("admin")
def user_password(current: Page) -> Response:
    """Set the account's password (lifts a lockout, signs it out everywhere)."""
    user = _account(current)
    if user.id == current.user.id:
        current.refuse(UserError("password", current._(
            "Change your own password on your Account page (it asks for the current one).")))
        return _detail(current, user, status=400)
    try:
        with current.db() as db:
            stored = db.get(StaffUser, user.id)
            assert stored is not None
            set_password(db, stored, _password(current, "password"))
    except UserError as error:
        current.refuse(error)
        return _detail(current, user, status=400)
    return current.redirect(f"/users/{user.id}", current._(
        "Password changed for {email}; they are signed out everywhere.").format(email=user.email))


@page("admin")
def user_disable(current: Page) -> Response:
    """The account can no longer sign in (never one's own, never the last admin)."""
    user = _account(current)
    try:
        with current.db() as db:
            stored = db.get(StaffUser, user.id)
            assert stored is not None
            check_admin_change(db, current.user, stored, disable=True)
            disable_user(db, stored, current.app.clock())
    except UserError as error:
        current.refuse(error)
        return _detail(current, user, status=400)
    return current.redirect(f"/users/{user.id}", current._("Disabled {email}.").format(
        email=user.email))


@page("admin")
def user_enable(current: Page) -> Response:
    """The account may sign in again (its lockout lifted)."""
    user = _account(current)
    with current.db() as db:
        stored = db.get(StaffUser, user.id)
        assert stored is not None
        enable_user(db, stored)
    return current.redirect(f"/users/{user.id}", current._("Enabled {email}.").format(
        email=user.email))


def role_names(current: Page) -> dict[str, str]:
    """Each role as staff read it, in their language."""
    names = {"frontdesk": current._("front desk"), "clinician": current._("clinician"),
             "admin": current._("admin")}
    return {role: names.get(role, role) for role in ROLES}


def _roles(current: Page) -> list[tuple[str, str]]:
    return list(role_names(current).items())


def _password(current: Page, name: str) -> str:
    """A password field as typed (spaces are part of a password: never stripped)."""
    value = current.form.get(name) if current.form is not None else None
    return value if isinstance(value, str) else ""


routes: list[BaseRoute] = [
    Route("/users", users_list, methods=["GET"]),
    Route("/users", user_add, methods=["POST"]),
    Route("/users/{user_id}", user_detail, methods=["GET"]),
    Route("/users/{user_id}/role", user_role, methods=["POST"]),
    Route("/users/{user_id}/password", user_password, methods=["POST"]),
    Route("/users/{user_id}/disable", user_disable, methods=["POST"]),
    Route("/users/{user_id}/enable", user_enable, methods=["POST"]),
]
