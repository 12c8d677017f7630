"""The console's languages: Babel message catalogues (`locale/<lang>.po`), one Jinja
environment per language, so every page and every string is in the reader's language."""

from __future__ import annotations

import gettext
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
LANGUAGES = ("en", "fr")  # English is the source language: it needs no catalogue
DOMAIN = "console"


def language_of(locale: str | None) -> str:
    """The console language for a locale code ("fr_CA" -> "fr"); English when unknown."""
    lang = (locale or "en").replace("-", "_").split("_")[0].lower()
    return lang if lang in LANGUAGES else "en"


@cache
def catalogue(lang: str) -> Catalog | None:
    path = HERE / "locale" / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == "en" or not path.exists():
        return None
    with path.open("rb") as po:
        return read_po(po, locale=lang, domain=DOMAIN)


class Translator:
    """gettext and ngettext over one catalogue; a missing or fuzzy entry stays in English."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self._catalogue = catalogue(lang)
        self._plural = gettext.c2py(self._catalogue.plural_expr) if self._catalogue else None

    def gettext(self, text: str) -> str:
        entry = self._catalogue.get(text) if self._catalogue else None
        if entry is None or entry.fuzzy or not isinstance(entry.string, str) or not entry.string:
            return text
        return entry.string

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        entry = self._catalogue.get(singular) if self._catalogue else None
        if entry is not None and not entry.fuzzy and isinstance(entry.string, tuple | list):
            forms = entry.string
            index = self._plural(n) if self._plural else 0
            if index < len(forms) and forms[index]:
                return str(forms[index])
        return singular if n == 1 else plural


def when(lang: str, tz: ZoneInfo) -> Callable[[datetime | None], str]:
    """A formatter of moments in the clinic's zone with its abbreviation: "1 Dec 2026, 09:05 EST"."""

    def show(moment: datetime | None) -> str:
        if moment is None:
            return ""
        local = moment.astimezone(tz)
        return f"{format_datetime(local, 'd MMM y, HH:mm', locale=lang)} {local.tzname()}"

    return show


def day(lang: str, tz: ZoneInfo) -> Callable[[datetime | None], str]:
    def show(moment: datetime | None) -> str:
        return format_date(moment.astimezone(tz), "EEE d MMM y", locale=lang) if moment else ""

    return show


@cache
def environment(lang: str) -> Environment:
    """The templates of the console in one language (autoescaped: patient data is text)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    translator = Translator(lang)
    env.install_gettext_callables(translator.gettext, translator.ngettext,  # type: ignore[attr-defined]
                                  newstyle=True)
    env.globals["lang"] = lang
    return env
