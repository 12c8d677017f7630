"""Protocols: each treatment's plan of messages, read from TOML files clinics can edit."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aftercare.errors import UserError
from aftercare.resources import data_dir

CHANNELS: tuple[Literal["sms", "email"], ...] = ("sms", "email")
_DURATION = re.compile(r"^(-?)(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """'30m', '6h', '2d', '-1d' as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a duration; write e.g. 30m, 6h, 2d")
    sign, amount, unit = match.groups()
    delta = timedelta(**{_UNITS[unit]: int(amount)})
    return -delta if sign else delta


# What a step's timing counts from:
#   session       a completed session (its aftercare)
#   next_session  a booked session (reminders before it)
#   rebooking     the date the next course session is due (last session + the course's
#                 spacing), planned only while no later session is booked
#   maintenance   each point of the maintenance cadence after the course's last session
Anchor = Literal["session", "next_session", "rebooking", "maintenance"]


class Question(BaseModel):
    """A check-in a step's SMS asks (e.g. "has the bruising gone? reply 1 or 2"), as data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # What the patient texts back (the whole message) -> the answer recorded on the session.
    answers: dict[str, str]
    # Words that show a longer reply speaks of the subject (any language): staff read it.
    mentions: tuple[str, ...] = ()
    # Answers that flag the booked session for staff, and what the flag tells them.
    flag_on: tuple[str, ...] = ()
    flag: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        if not self.answers:
            raise ValueError("`answers` must name at least one reply, e.g. { \"1\" = \"gone\" }")
        known = set(self.answers.values())
        if not set(self.flag_on) <= known:
            raise ValueError("`flag_on` must list answers' values")
        if self.flag_on and not self.flag:
            raise ValueError("`flag` must say what staff should do when the session is flagged")
        return self


class Step(BaseModel):
    """One message of a protocol: when it goes, for how long it stays worth sending, where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    anchor: Anchor = "session"
    after: timedelta | None = None
    days: int | None = None
    at: time | None = None
    valid_for: timedelta
    channels: tuple[Literal["sms", "email"], ...] = CHANNELS
    on_sessions: Literal["every", "first", "last"] = "every"
    # Not sent once the patient has another session booked or done after this one.
    skip_if_later_session: bool = False
    # A check-in the SMS asks before a booked session (steps anchored on next_session).
    question: Question | None = None

    @field_validator("after", "valid_for", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_timing(self) -> Step:
        if (self.after is None) == (self.days is None):
            raise ValueError("give either `after` (e.g. \"4h\") or `days` with `at`")
        if self.days is not None and self.at is None:
            raise ValueError("`days` needs `at` (local time, e.g. \"10:00\")")
        if self.valid_for <= timedelta(0):
            raise ValueError("`valid_for` must be positive")
        if not self.channels:
            raise ValueError("`channels` must name at least one of sms, email")
        if self.on_sessions != "every" and self.anchor != "session":
            raise ValueError("`on_sessions` only applies to steps anchored on the session")
        if self.question is not None and self.anchor != "next_session":
            raise ValueError("a `question` is asked before a booked session: anchor the step "
                             "on next_session")
        return self

    @property
    def supersedable(self) -> bool:
        """Whether a later visit makes this step moot: nudges to book and maintenance
        reminders always, other steps when the protocol marks them skip_if_later_session."""
        return self.skip_if_later_session or self.anchor in ("rebooking", "maintenance")

    def applies_to(self, number: int, planned: int) -> bool:
        """Whether this step is planned after session `number` of a `planned`-session course."""
        if self.on_sessions == "first":
            return number == 1
        if self.on_sessions == "last":
            return number >= planned
        return True

    def planned_at(self, anchor: datetime, tz: ZoneInfo) -> datetime:
        """When this step falls for a session at `anchor`, computed in the patient's zone."""
        if self.after is not None:
            return anchor + self.after
        assert self.days is not None and self.at is not None
        day = anchor.astimezone(tz).date() + timedelta(days=self.days)
        return datetime.combine(day, self.at, tzinfo=tz).astimezone(UTC)


class Phase(BaseModel):
    """Part of a maintenance cadence: a reminder every `every_days`, `times` times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_days: int = Field(ge=1, le=730)
    times: int | None = Field(default=None, ge=1)  # None: repeats up to the horizon


class Maintenance(BaseModel):
    """What follows the course; `summary` is for staff listings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str
    cadence: tuple[Phase, ...] = ()

    @model_validator(mode="after")
    def _open_end_last(self) -> Maintenance:
        if any(phase.times is None for phase in self.cadence[:-1]):
            raise ValueError("every cadence phase but the last needs `times`")
        return self

    def offsets(self, horizon: timedelta) -> list[timedelta]:
        """When each maintenance reminder falls, counted from the last session, up to `horizon`."""
        found: list[timedelta] = []
        total = timedelta(0)
        for phase in self.cadence:
            count = 0
            while phase.times is None or count < phase.times:
                total += timedelta(days=phase.every_days)
                if total > horizon:
                    return found
                found.append(total)
                count += 1
        return found


class Protocol(BaseModel):
    """A treatment's plan: course defaults and the ordered steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    name: str
    region: Literal["body", "face", "scalp"] = "body"  # templates adapt their advice to it
    areas: tuple[str, ...] = ()
    maintenance: Maintenance | None = None
    sessions: int = Field(ge=1, le=50)
    spacing_days: tuple[int, int]
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_steps(self) -> Protocol:
        keys = [step.key for step in self.steps]
        if len(keys) != len(set(keys)):
            raise ValueError("step keys must be unique")
        if any(step.anchor == "maintenance" for step in self.steps) and not (
                self.maintenance and self.maintenance.cadence):
            raise ValueError("a step anchored on maintenance needs [maintenance] cadence, "
                             "e.g. cadence = [{ every_days = 35, times = 3 }, { every_days = 75 }]")
        return self

    def steps_for(self, anchor: str) -> list[Step]:
        """The steps timed from `anchor`, in protocol order."""
        return [step for step in self.steps if step.anchor == anchor]

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)


class ProtocolBook:
    """All known protocols by treatment key."""

    def __init__(self, protocols: dict[str, Protocol]) -> None:
        self._protocols = dict(sorted(protocols.items()))

    @classmethod
    def load(cls, folder: Path | None = None, clinic_folder: Path | None = None) -> ProtocolBook:
        """Read every `*.toml` of the packaged protocols (or `folder`), then the clinic's own.

        A clinic file with the same key replaces the packaged protocol; a new key adds one.
        """
        found: dict[str, Protocol] = {}
        for source in (folder or data_dir("protocols"), clinic_folder):
            if source is None:
                continue
            if not source.is_dir():
                raise UserError("protocols", f"{source} is not a folder; fix "
                                "messaging.protocols_dir")
            for path in sorted(source.glob("*.toml")):
                protocol = load_protocol(path)
                found[protocol.key] = protocol
        return cls(found)

    def __iter__(self) -> Iterator[Protocol]:
        return iter(self._protocols.values())

    def get(self, key: str, field: str = "treatment") -> Protocol:
        """The protocol for `key`, or a UserError listing the known treatments."""
        try:
            return self._protocols[key]
        except KeyError:
            known = ", ".join(self._protocols) or "none"
            raise UserError(field, f"unknown treatment '{key}'; known: {known}") from None


def load_protocol(path: Path) -> Protocol:
    """Read one protocol file, or raise a UserError naming the file and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        protocol = Protocol(**data)
    except tomllib.TOMLDecodeError as exc:
        raise UserError("protocol", f"{path} is not valid TOML ({exc})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        problem = str(error["msg"]).removeprefix("Value error, ")
        raise UserError("protocol", f"{path}: {key}: {problem}") from None
    if protocol.key != path.stem:
        raise UserError("protocol", f"{path}: key '{protocol.key}' must equal the file name")
    return protocol


def describe_timing(step: Step) -> str:
    """When a step goes, in words, for staff listings and previews."""
    anchor = {"session": "the session", "next_session": "the next session",
              "rebooking": "the day the next session is due (when none is booked)",
              "maintenance": "each maintenance date"}[step.anchor]
    if step.after is not None:
        hours = step.after.total_seconds() / 3600
        amount = f"{abs(hours):g}h" if abs(hours) < 48 else f"{abs(hours) / 24:g} days"
        return f"{amount} {'after' if hours >= 0 else 'before'} {anchor}"
    assert step.days is not None and step.at is not None
    if step.days == 0:
        day = f"on {anchor}" if step.anchor in ("rebooking", "maintenance") else f"day of {anchor}"
    else:
        count = f"{abs(step.days)} day{'s' if abs(step.days) != 1 else ''}"
        day = f"{count} {'after' if step.days > 0 else 'before'} {anchor}"
    return f"{day}, {step.at:%H:%M} local time"
