"""The console's French catalogue covers every string of its pages and code."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import aftercare.web.console as console_package
from aftercare.web.console.i18n import Translator, language_of

CONSOLE = Path(console_package.__file__).parent
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true",
                                    "lstrip_blocks": "true"}}


def _extracted() -> set[str]:
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(CONSOLE), method_map=METHODS, options_map=OPTIONS):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_console_string_has_a_french_translation() -> None:
    extracted = _extracted()
    assert len(extracted) > 50, "the extraction found almost nothing: is babel.cfg right?"
    with (CONSOLE / "locale/fr/LC_MESSAGES/console.po").open("rb") as po:
        catalogue = read_po(po, locale="fr")
    missing = sorted(text for text in extracted
                     if not (entry := catalogue.get(text)) or not entry.string or entry.fuzzy)
    assert missing == [], "untranslated: run pybabel extract/update (docs/console.md)"


def test_translator_uses_the_catalogue_and_falls_back_to_english() -> None:
    assert Translator("fr").gettext("Today") == "Aujourd'hui"
    assert Translator("fr").gettext("A sentence nobody wrote") == "A sentence nobody wrote"
    assert Translator("en").gettext("Today") == "Today"
    assert language_of("fr_CA") == "fr" and language_of("de") == "en" and language_of(None) == "en"
