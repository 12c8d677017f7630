"""Content checks: every protocol's every message exists, renders and fits, in every locale."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import TemplateError, TemplateNotFound, TemplateSyntaxError

from aftercare.config import Settings
from aftercare.preview import sample_contexts
from aftercare.protocols import Protocol, ProtocolBook
from aftercare.rendering import Renderer
from aftercare.segments import budget, measure, name_of

KINDS = {"sms": ("sms.txt",), "email": ("subject.txt", "email.txt")}


def content_problems(settings: Settings, protocols: ProtocolBook, renderer: Renderer,
                     *, today: datetime | None = None) -> list[str]:
    """One line per missing, broken or oversized template (file and line where known)."""
    today = today or datetime.now(UTC)
    problems: list[str] = []
    for protocol in protocols:
        for locale in renderer.locales():
            for step in protocol.steps:
                for channel in step.channels:
                    missing = [kind for kind in KINDS[channel]
                               if not _exists(renderer, locale, protocol.key, step.key, kind)]
                    for kind in missing:
                        problems.append(f"templates: {locale}/{step.key}.{kind} is missing "
                                        f"(protocol {protocol.key}); add it, or "
                                        f"{locale}/{protocol.key}/{step.key}.{kind}")
                    if missing:
                        continue
                    problems += _render_problems(settings, renderer, protocol, locale, step.key,
                                                 channel, today)
    return list(dict.fromkeys(problems))  # a shared template's problem once, not per protocol


def _exists(renderer: Renderer, locale: str, protocol: str, step: str, kind: str) -> bool:
    try:
        renderer.template(locale, protocol, step, kind)
    except TemplateNotFound:
        return False
    except TemplateSyntaxError:
        return True  # reported, with its line, when rendering
    return True


def _render_problems(settings: Settings, renderer: Renderer, protocol: Protocol, locale: str,
                     step: str, channel: str, today: datetime) -> list[str]:
    problems = []
    for context in sample_contexts(settings, protocol, protocol.step(step), locale,
                                   today=today):
        try:
            rendered = renderer.render(locale, step, channel, context)
        except TemplateError as exc:
            return [f"templates: {_where(exc)}: {exc.message or exc} (protocol "
                    f"{protocol.key}, {channel})"]
        if channel != "sms":
            continue
        size = measure(rendered.text)
        name = renderer.template(locale, protocol.key, step, "sms.txt").filename
        if size.forcing_ucs2 and locale == "en":
            problems.append(f"templates: {name}: {', '.join(map(name_of, size.forcing_ucs2))} "
                            "force UCS-2 (70 characters a segment)")
        if size.segments > budget(locale):
            problems.append(f"templates: {name}: {size.describe()} for protocol "
                            f"{protocol.key}; the {locale} budget is {budget(locale)} "
                            "segments")
    return list(dict.fromkeys(problems))


def _where(exc: TemplateError) -> str:
    """`file:line` of the template line that failed, as Jinja reports it in the traceback."""
    if isinstance(exc, TemplateSyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    where = "unknown template"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".txt", ".html")):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
