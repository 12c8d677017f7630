"""Rendering a step's templates for one patient, at send time, in their locale and zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aftercare.clock import zone
from aftercare.config import ClinicConfig
from aftercare.models import Course, Patient
from aftercare.protocols import Protocol
from aftercare.resources import data_dir
from aftercare.segments import to_gsm7

if TYPE_CHECKING:
    from babel import Locale as BabelLocale
    from jinja2 import Environment, Template

    from aftercare.queries import AnySession

# Babel/CLDR put narrow and plain no-break spaces in times ("10:00\u202fAM"); either one
# silently turns a whole SMS into UCS-2, halving what fits in a segment.
_SPACES = str.maketrans({"\u202f": " ", "\xa0": " "})


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel: SMS uses `text` only."""

    text: str
    subject: str | None = None
    html: str | None = None


class Renderer:
    """Finds templates (clinic folders first, then the packaged ones) and renders them."""

    def __init__(self, folders: list[Path] | None = None) -> None:
        self.folders = [*(folders or []), data_dir("templates")]
        # (html, locale, protocol, step, kind) -> the template found for it: rendering a
        # message then costs one check that its file did not change, not a search through
        # every folder (most names tried do not exist, and misses are not cached by Jinja).
        self._found: dict[tuple[bool, str, str, str, str], Template] = {}

    # Jinja (and its loaders) are built on first use: a command that renders nothing does
    # not pay for importing them.
    @cached_property
    def _loader(self) -> Any:
        from jinja2 import FileSystemLoader, PrefixLoader

        # One prefix per folder, so a clinic's file wins over every packaged one, even a
        # packaged per-protocol file over the clinic's per-step file.
        return PrefixLoader({str(i): FileSystemLoader(str(folder))
                             for i, folder in enumerate(self.folders)})

    @cached_property
    def _text(self) -> Environment:
        from jinja2 import Environment, StrictUndefined

        return Environment(loader=self._loader, undefined=StrictUndefined, autoescape=False)

    @cached_property
    def _html(self) -> Environment:
        from jinja2 import Environment, StrictUndefined

        return Environment(loader=self._loader, undefined=StrictUndefined, autoescape=True)

    def locales(self) -> tuple[str, ...]:
        """Locales that have a template folder."""
        found = {p.name for folder in self.folders if folder.is_dir()
                 for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")}
        return tuple(sorted(found))

    def names(self, locale: str, protocol: str, step: str, kind: str) -> list[str]:
        """Where a template is looked for: folder by folder (the clinic's first), the
        protocol's own wording, then the step's."""
        return [f"{i}/{locale}/{name}" for i in range(len(self.folders))
                for name in (f"{protocol}/{step}.{kind}", f"{step}.{kind}")]

    def template(self, locale: str, protocol: str, step: str, kind: str,
                 html: bool = False) -> Template:
        """The template for one part of a message; raises TemplatesNotFound if none exists."""
        key = (html, locale, protocol, step, kind)
        found = self._found.get(key)
        if found is None or not found.is_up_to_date:
            env = self._html if html else self._text
            found = self._found[key] = env.select_template(self.names(locale, protocol, step,
                                                                      kind))
        return found

    def layout(self, locale: str) -> Template:
        """The HTML layout every email of `locale` is poured into (autoescaped)."""
        return self._html.select_template([f"{i}/{locale}/_email.html"
                                           for i in range(len(self.folders))])

    def render(self, locale: str, step: str, channel: str, context: dict[str, Any]) -> Rendered:
        """Render `step` for `channel`; raises jinja2 errors for broken or missing templates."""
        protocol = context["treatment"]["key"]

        def part(kind: str) -> str:
            return self.template(locale, protocol, step, kind).render(context)

        if channel == "sms":
            return Rendered(text=to_gsm7(_tidy(part("sms.txt"))))
        from jinja2 import TemplateNotFound

        subject = " ".join(part("subject.txt").split())
        text = _tidy(part("email.txt"))
        try:
            html = self.template(locale, protocol, step, "email.html", html=True).render(context)
        except TemplateNotFound:
            html = self.layout(locale).render(
                {**context, "subject": subject, "paragraphs": paragraphs(text), "lang": locale})
        return Rendered(text=text, subject=subject, html=html)


    def answer(self, locale: str, name: str, context: dict[str, Any]) -> str:
        """An automatic SMS answer to a patient's reply (`replies/<name>.sms.txt`)."""
        names = [f"{i}/{loc}/replies/{name}.sms.txt" for loc in dict.fromkeys((locale, "en"))
                 for i in range(len(self.folders))]
        return to_gsm7(_tidy(self._text.select_template(names).render(context)))


def answer_context(clinic: ClinicConfig, patient: Patient | None) -> dict[str, Any]:
    """The variables of an automatic answer: the clinic, and the patient when known."""
    return {"clinic": {"name": clinic.name, "phone": clinic.phone, "email": clinic.email,
                       "emergency_number": clinic.emergency_number},
            "patient": None if patient is None else {"first_name": patient.first_name}}


def _tidy(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row, no leading or trailing blank."""
    lines = [line.rstrip() for line in text.translate(_SPACES).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def paragraphs(text: str) -> list[dict[str, Any]]:
    """Plain text as HTML-ready blocks: paragraphs, and lists where every line starts '- '."""
    blocks: list[dict[str, Any]] = []
    for chunk in text.split("\n\n"):
        lines = chunk.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            blocks.append({"kind": "list", "items": [line[2:] for line in lines]})
        elif lines:
            blocks.append({"kind": "text", "text": " ".join(lines)})
    return blocks


def _moment(at: datetime, timezone: str, locale: str) -> dict[str, str]:
    from babel.dates import format_date, format_time  # Babel's CLDR data costs a start ~0.1 s

    local, parsed = at.astimezone(zone(timezone)), _babel_locale(locale)
    return {"date": format_date(local, "EEEE d MMMM", locale=parsed).translate(_SPACES),
            "time": format_time(local, "short", locale=parsed).translate(_SPACES)}


@cache
def _babel_locale(locale: str) -> BabelLocale:
    """Babel's locale `locale`, parsed once a process (its data ships with Babel): every
    date and time of every message would parse it again."""
    from babel import Locale

    return Locale.parse(locale)


def message_context(
    clinic: ClinicConfig,
    patient: Patient,
    protocol: Protocol,
    course: Course,
    session: AnySession,
    next_session: AnySession | None,
    *,
    first_sms: bool,
    first_visit: bool = False,
    occurrence: int = 0,
) -> dict[str, Any]:
    """The variables every template may use (documented in docs/content.md)."""
    tz, locale = patient.timezone, patient.locale
    return {
        "clinic": {"name": clinic.name, "phone": clinic.phone, "email": clinic.email,
                   "emergency_number": clinic.emergency_number,
                   "booking_url": clinic.booking_url},
        "patient": {"first_name": patient.first_name, "name": patient.name},
        "treatment": {"key": protocol.key, "name": protocol.name, "region": protocol.region},
        "area": course.area,
        "session": {"number": session.number, **_moment(session.at, tz, locale)},
        "course": {"sessions_planned": course.sessions_planned,
                   "spacing_days": course.spacing_days},
        "next_session": None if next_session is None else {
            "number": next_session.number, **_moment(next_session.at, tz, locale)},
        "first_sms": first_sms,
        # No session done yet: a reminder of a first booked visit has no "last time".
        "first_visit": first_visit,
        "occurrence": occurrence,  # 1, 2, ... within a series of maintenance reminders
    }
