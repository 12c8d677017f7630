"""Protocols: each treatment's timeline, and every message as a patient would receive it,
per language and channel, with its SMS size (the same rendering as `aftercare preview`)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.app import App
from aftercare.errors import UserError
from aftercare.preview import PreviewItem, preview
from aftercare.protocols import Protocol, describe_timing
from aftercare.segments import SmsSize, budget, measure, name_of
from aftercare.web.console.base import Page, page


@dataclass(frozen=True)
class StepLine:
    """One step of a treatment's timeline, as staff read it."""

    key: str
    title: str
    timing: str
    channels: tuple[str, ...]
    on_sessions: str
    valid_hours: float
    asks: bool


@dataclass(frozen=True)
class Shown:
    """One message in one language on one channel, with its SMS size when it is an SMS."""

    item: PreviewItem
    size: SmsSize | None
    over_budget: bool
    forcing: tuple[str, ...]


def timeline(protocol: Protocol) -> list[StepLine]:
    """The protocol's steps with their timing in words (`describe_timing`)."""
    return [StepLine(key=s.key, title=s.title, timing=describe_timing(s), channels=s.channels,
                     on_sessions=s.on_sessions, valid_hours=s.valid_for.total_seconds() / 3600,
                     asks=s.question is not None)
            for s in protocol.steps]


def rendered(app: App, protocol: Protocol, locale: str, channel: str | None) -> list[Shown]:
    """Every message of `protocol` in `locale` (on `channel`, or all), measured like the CLI."""
    shown = []
    for item in preview(app.settings, app.renderer, protocol, locale, channel, today=app.clock()):
        size = measure(item.rendered.text) if item.channel == "sms" else None
        shown.append(Shown(item=item, size=size,
                           over_budget=size is not None and size.segments > budget(locale),
                           forcing=tuple(map(name_of, size.forcing_ucs2)) if size else ()))
    return shown


@page()
def protocols_page(current: Page) -> Response:
    """Every treatment with its course, maintenance and step timeline."""
    listed = [(p, timeline(p)) for p in current.app.protocols]
    return current.render("protocols.html", nav="protocols", listed=listed)


@page()
def protocol_page(current: Page) -> Response:
    """One treatment: its timeline and every message per language and channel."""
    app = current.app
    key = current.request.path_params["treatment"]
    try:
        protocol = app.protocols.get(key)
    except UserError:
        raise current.not_found(current._("no such treatment")) from None
    locales = app.renderer.locales()
    chosen_locale = current.query("locale")
    chosen_channel = current.query("channel")
    show_locales = [chosen_locale] if chosen_locale in locales else list(locales)
    channel = chosen_channel if chosen_channel in ("sms", "email") else None
    messages = [(locale, rendered(app, protocol, locale, channel)) for locale in show_locales]
    return current.render("protocols_detail.html", nav="protocols", protocol=protocol,
                          steps=timeline(protocol), messages=messages, locales=locales,
                          chosen_locale=chosen_locale if chosen_locale in locales else "",
                          chosen_channel=channel or "")


routes: list[BaseRoute] = [
    Route("/protocols", protocols_page, methods=["GET"]),
    Route("/protocols/{treatment}", protocol_page, methods=["GET"]),
]
