"""Content checks: every protocol's every message exists, renders and fits, in every locale."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL

import aftercare
from aftercare.clock import zone
from aftercare.config import Settings
from aftercare.preview import sample_contexts
from aftercare.protocols import Protocol, ProtocolBook
from aftercare.rendering import Renderer
from aftercare.segments import budget, measure, name_of

if TYPE_CHECKING:
    from jinja2 import TemplateError

log = logging.getLogger(__name__)

KINDS = {"sms": ("sms.txt",), "email": ("subject.txt", "email.txt")}


def content_fingerprint(settings: Settings, protocols: ProtocolBook, renderer: Renderer,
                        today: datetime) -> str:
    """A digest of everything `content_problems` depends on: the templates' files (names
    and bytes), the protocols as loaded, the clinic's details, the sample day and the release."""
    digest = hashlib.sha256()

    def add(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "big") + data)

    add(aftercare.__version__, settings.clinic.model_dump_json(),
        # Sample messages are dated today: day and month names change their length.
        today.astimezone(zone(settings.clinic.timezone)).date().isoformat())
    for protocol in protocols:
        add(protocol.model_dump_json())
    for index, folder in enumerate(renderer.folders):
        add(str(index))
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                add(path.relative_to(folder).as_posix(), path.read_bytes())
    return digest.hexdigest()


def checked_content_problems(settings: Settings, protocols: ProtocolBook, renderer: Renderer,
                             database: URL, *, today: datetime | None = None) -> list[str]:
    """`content_problems`, skipped when the content is what last passed with this database.

    Every start (`send-due`, `run`, `serve`) asks; rendering every template costs seconds,
    reading their bytes milliseconds. Only a clean result is remembered, in a file beside
    a SQLite database (else in the user's cache folder): a problem is reported every time.
    """
    today = today or datetime.now(UTC)
    marker = _marker(database)
    fingerprint = content_fingerprint(settings, protocols, renderer, today)
    try:
        if marker is not None and marker.read_text(encoding="ascii").strip() == fingerprint:
            return []
    except OSError:
        pass  # no marker yet, or unreadable: check
    problems = content_problems(settings, protocols, renderer, today=today)
    if not problems and marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            scratch = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
            scratch.write_text(fingerprint + "\n", encoding="ascii")
            os.replace(scratch, marker)  # whole or absent, even with several processes
        except OSError as exc:
            log.debug("cannot remember the content check in %s: %s", marker, exc)
    return problems


def _marker(database: URL) -> Path | None:
    """Where the last clean content check of this database is remembered, or None."""
    if database.get_backend_name() == "sqlite":
        if not database.database or database.database == ":memory:":
            return None
        path = Path(database.database)
        return path.with_name(f"{path.name}-content-check")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # The URL may hold a password: only its digest names the file.
    name = hashlib.sha256(database.render_as_string(hide_password=False).encode()).hexdigest()
    return cache / "aftercare" / f"content-check-{name[:32]}"


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
    # Jinja is imported when a check runs, not when a start finds the content unchanged.
    from jinja2 import TemplateNotFound, TemplateSyntaxError

    try:
        renderer.template(locale, protocol, step, kind)
    except TemplateNotFound:
        return False
    except TemplateSyntaxError:
        return True  # reported, with its line, when rendering
    return True


def _render_problems(settings: Settings, renderer: Renderer, protocol: Protocol, locale: str,
                     step: str, channel: str, today: datetime) -> list[str]:
    from jinja2 import TemplateError

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
    from jinja2 import TemplateSyntaxError

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
