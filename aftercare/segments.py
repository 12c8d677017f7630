"""SMS size: encoding, segments, and the characters that silently force UCS-2."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

# GSM 03.38: the basic table costs one septet a character, the extension table two.
GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                 "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = set("^{}\\[~]|€\f")
# Look-alikes that slip in from word processors and turn a whole SMS into UCS-2.
LOOKALIKES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ",
              "\u202f": " ", "\u2013": "-", "\u2014": "-", "\u2026": "..."}
# Per-locale budget in segments (French needs more room for the same message).
BUDGET = {"en": 2, "fr": 3}
DEFAULT_BUDGET = 2
# The most segments an SMS of any locale may use (the pace plans claims with it).
MAX_BUDGET = max(DEFAULT_BUDGET, *BUDGET.values())


@dataclass(frozen=True)
class SmsSize:
    """How an SMS text travels: its encoding, length in units, and segments billed."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    forcing_ucs2: tuple[str, ...]  # the characters outside GSM-7, in order of appearance

    def describe(self) -> str:
        """E.g. '2 segments, GSM-7, 245 units'."""
        plural = "s" if self.segments != 1 else ""
        return f"{self.segments} segment{plural}, {self.encoding}, {self.units} units"


def measure(text: str) -> SmsSize:
    """Encoding and segment count of `text` as a carrier bills it."""
    outside = tuple(dict.fromkeys(c for c in text if c not in GSM7_BASIC | GSM7_EXTENSION))
    if not outside:
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, part = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
        encoding = "UCS-2"
    segments = 1 if units <= single else math.ceil(units / part)
    return SmsSize(encoding, units, segments, outside)


_LIGATURES = {"œ": "oe", "Œ": "OE"}


def to_gsm7(text: str) -> str:
    """`text` with every character that has a GSM-7 equivalent replaced by it.

    Names like "Françoise" or "Jérôme" would otherwise turn a whole SMS into UCS-2 (70
    characters a segment instead of 160); characters without an equivalent stay.
    """
    out = []
    for char in text:
        if char in GSM7_BASIC or char in GSM7_EXTENSION:
            out.append(char)
        elif char in LOOKALIKES or char in _LIGATURES:
            out.append(LOOKALIKES.get(char) or _LIGATURES[char])
        else:
            bare = "".join(c for c in unicodedata.normalize("NFKD", char)
                           if not unicodedata.combining(c))
            out.append(bare if bare and all(c in GSM7_BASIC for c in bare) else char)
    return "".join(out)


def budget(locale: str) -> int:
    """How many segments an SMS in `locale` may use."""
    return BUDGET.get(locale, DEFAULT_BUDGET)


def name_of(char: str) -> str:
    """A readable name for a character that forces UCS-2, with its GSM-7 replacement."""
    code = f"U+{ord(char):04X}"
    fix = LOOKALIKES.get(char)
    return f"{char!r} ({code}; use {fix!r})" if fix else f"{char!r} ({code})"
