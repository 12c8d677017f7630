"""What every command shares: the root options, the App they configure, one unit of work each."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeAlias, TypeVar

import click
from sqlmodel import Session as DbSession

from aftercare.app import App
from aftercare.clock import parse_time, zone
from aftercare.errors import UserError

EXIT_USER_ERROR = 2
CLI_ACTOR = "cli"  # who the history says made a change from the command line

# What a command shows on stdout: text, a JSON document (`--json`), or None when it printed as it went.
JsonDocument: TypeAlias = Mapping[str, object] | Sequence[Mapping[str, object]]
Shown: TypeAlias = str | JsonDocument | None

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., object])


@dataclass
class CliState:
    """The root options of one `aftercare` invocation; the App they configure is built on first use."""

    config: str | None = None
    now: str | None = None  # parsed in the clinic's zone, so only once the config is read
    verbose: bool = False
    # With --json, stdout carries one JSON document: console channels print to stderr.
    json_output: bool = False
    _app: App | None = field(default=None, init=False, repr=False)

    def use_now(self, text: str) -> None:
        """`--now` given after the command: the same option as the global one, so the same clock."""
        if self.now not in (None, text):
            raise UserError("now", "given twice with different times; give it once")
        if self._app is not None:  # the clock is fixed when the app is built: too late now
            raise RuntimeError("--now given after the app was built")
        self.now = text

    @property
    def app(self) -> App:
        """The App of this invocation, with its clock fixed at --now when one was given."""
        if self._app is None:
            app = App.from_config(self.config, console=sys.stderr if self.json_output else None)
            if self.now:
                fixed = parse_time(self.now, zone(app.settings.clinic.timezone), "now")
                app.clock = lambda: fixed
            self._app = app
        return self._app


class Work:
    """One command's App and its database session, a unit of work opened on first use."""

    def __init__(self, state: CliState, resources: ExitStack) -> None:
        self.state = state
        self._resources = resources
        self._db: DbSession | None = None

    @property
    def app(self) -> App:
        return self.state.app

    @property
    def db(self) -> DbSession:
        # Opened on first use, not before the command starts: bad input is then reported
        # ahead of a missing database, and commands that need no database never check it.
        if self._db is None:
            self._db = self._resources.enter_context(self.app.db(actor=CLI_ACTOR))
        return self._db


def current_state(ctx: click.Context | None = None) -> CliState:
    """The state the root group put in the click context."""
    state = (ctx or click.get_current_context()).find_object(CliState)
    if state is None:
        raise RuntimeError("an aftercare command ran outside the `aftercare` group")
    return state


def with_app(command: Callable[Concatenate[Work, P], Shown]) -> Callable[P, None]:
    """Give the command its Work; what it returns is printed once its unit of work is committed."""

    @functools.wraps(command)
    def invoke(*args: P.args, **kwargs: P.kwargs) -> None:
        # App.db() commits when this block ends normally and rolls back if it raises, so
        # nothing is printed for work that was not kept, and a reader quitting early
        # (`| head -1`) cannot undo it.
        with ExitStack() as resources:
            shown = command(Work(current_state(), resources), *args, **kwargs)
        show(shown)

    return invoke


def show(shown: Shown) -> None:
    """Print text as it is (nothing for empty text), or a JSON document, on stdout."""
    if isinstance(shown, str):
        if shown:
            click.echo(shown)
    elif shown is not None:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))


def _json_chosen(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        current_state(ctx).json_output = True
    return value


def json_option(help: str) -> Callable[[F], F]:
    """`--json`, passed to the command as `as_json`; console channels then print to stderr."""
    return click.option("--json", "as_json", is_flag=True, help=help, callback=_json_chosen)


def clinic_time(app: App, text: str, field: str) -> datetime:
    """A time given on the command line, in UTC; without an offset it is the clinic's local time."""
    return parse_time(text, zone(app.settings.clinic.timezone), field)
