"""SMS segment counting, as carriers bill it."""

from __future__ import annotations

import pytest

from aftercare.segments import budget, measure, name_of, to_gsm7


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count twice
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 159 + "[", "GSM-7", 161, 2),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the basic table
        ("ê" * 70, "UCS-2", 70, 1),  # ê is not
        ("ê" * 71, "UCS-2", 71, 2),
        ("ê" * 134, "UCS-2", 134, 2),
        ("ê" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: two UTF-16 units each
    ],
)
def test_measure(text: str, encoding: str, units: int, segments: int) -> None:
    size = measure(text)
    assert (size.encoding, size.units, size.segments) == (encoding, units, segments)


def test_lookalikes_are_named_with_their_fix() -> None:
    size = measure("It\u2019s fine\u00a0today")
    assert size.encoding == "UCS-2" and size.forcing_ucs2 == ("\u2019", "\u00a0")
    assert name_of("\u2019") == "'\u2019' (U+2019; use \"'\")"
    assert "U+00A0" in name_of("\u00a0")


def test_budgets() -> None:
    assert (budget("en"), budget("fr"), budget("de")) == (2, 3, 2)


def test_names_with_accents_outside_gsm7_keep_the_sms_in_gsm7() -> None:
    text = to_gsm7("Bonjour Françoise, Jérôme et Zoë : rendez-vous en août. C\u2019est noté \u2013 œuvre")
    assert text == "Bonjour Francoise, Jérome et Zoe : rendez-vous en aout. C'est noté - oeuvre"
    assert measure(text).encoding == "GSM-7"
    assert to_gsm7("see you 😀") == "see you 😀"  # no equivalent: stays, and counts as UCS-2
