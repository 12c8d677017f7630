"""`user add|list|disable|enable|password|role`: staff accounts for the console."""

from __future__ import annotations

import sys

import click

from aftercare.cli import views
from aftercare.cli.context import Shown, Work, json_option, with_app
from aftercare.errors import UserError
from aftercare.staff import (
    ROLES,
    add_user,
    disable_user,
    enable_user,
    find_user,
    list_users,
    set_password,
    set_role,
)


def _password(stdin: bool) -> str:
    """The password from one line of stdin (scripts), else asked twice at a hidden prompt."""
    if stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise UserError("password", "nothing was given on stdin")
        return line.rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group("user")
def user_group() -> None:
    """Staff accounts that sign in to the console (aftercare serve)."""


@user_group.command("add")
@click.argument("email")
@click.option("--name", required=True, help="The person's name, shown in the history.")
@click.option("--role", required=True, type=click.Choice(ROLES),
              help="frontdesk, clinician (also urgent replies) or admin (also users, import, forget).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not a prompt.")
@with_app
def user_add(work: Work, email: str, name: str, role: str, password_stdin: bool) -> Shown:
    """Add a staff account; the password is kept only as an Argon2id hash."""
    user = add_user(work.db, email, name, role, _password(password_stdin), work.app.clock())
    return f"Added {user.email} ({user.role})."


@user_group.command("list")
@json_option("Print a JSON list.")
@with_app
def user_list(work: Work, as_json: bool) -> Shown:
    """Every staff account, its role, and whether it is disabled or locked."""
    rows = [views.user_json(u, work.app.clock()) for u in list_users(work.db)]
    if as_json:
        return rows
    if not rows:
        return "No staff accounts yet; add one with `aftercare user add`."
    return "\n".join(f"{r['email']:<32} {r['role']:<10} {r['name']}"
                     f"{'  [disabled]' if r['disabled'] else ''}{'  [locked]' if r['locked'] else ''}"
                     for r in rows)


@user_group.command("disable")
@click.argument("email")
@with_app
def user_disable(work: Work, email: str) -> Shown:
    """EMAIL can no longer sign in; its open sessions end at once."""
    user = find_user(work.db, email)
    disable_user(work.db, user, work.app.clock())
    return f"Disabled {user.email}."


@user_group.command("enable")
@click.argument("email")
@with_app
def user_enable(work: Work, email: str) -> Shown:
    """EMAIL may sign in again."""
    user = find_user(work.db, email)
    enable_user(work.db, user)
    return f"Enabled {user.email}."


@user_group.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not a prompt.")
@with_app
def user_password(work: Work, email: str, password_stdin: bool) -> Shown:
    """Set EMAIL's password (also lifts a lockout and signs it out everywhere)."""
    user = find_user(work.db, email)
    set_password(work.db, user, _password(password_stdin))
    return f"Password changed for {user.email}."


@user_group.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@with_app
def user_role(work: Work, email: str, role: str) -> Shown:
    """Give EMAIL another role."""
    user = find_user(work.db, email)
    set_role(work.db, user, role)
    return f"{user.email} is now {user.role}."
