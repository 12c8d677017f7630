"""Triage of patients' SMS replies: urgent, review or routine, by keyword matching.

This is deliberately simple keyword matching, not language understanding. The terms,
negation words and reach live in `config/triage.toml` (a clinic may replace the file);
this module only folds text (case, accents, apostrophes), cuts it into clauses, finds
the terms and decides whether a plain negation ("no fever", "pas de fievre") cancels a
term. Where it cannot tell, it keeps the term: a missed emergency costs more than a
false alarm. docs/triage.md explains the rules and their limits.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from aftercare.errors import UserError
from aftercare.models import TriageLevel

# The levels are the inbox's (models.TriageLevel): one definition.
URGENT = TriageLevel.URGENT.value
REVIEW = TriageLevel.REVIEW.value
ROUTINE = TriageLevel.ROUTINE.value
LEVELS = (URGENT, REVIEW)  # checked in this order: urgent beats review beats routine

_PACKAGE = Path(__file__).resolve().parent


def packaged_rules_path() -> Path:
    """The packaged triage.toml: inside the installed wheel, else the checkout's config/."""
    installed = _PACKAGE / "_data" / "triage.toml"
    return installed if installed.is_file() else _PACKAGE.parent / "config" / "triage.toml"


@dataclass(frozen=True)
class Triage:
    """The level of one reply and the configured terms that decided it (as written)."""

    level: str  # URGENT, REVIEW or ROUTINE
    matched: tuple[str, ...]


# ---------------------------------------------------------------------------------------
# Folding and cutting text. Terms from the file go through the same folding as messages,
# so "fièvre", "Fievre" and "FIÈVRE" are one word.

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss"})
# Punctuation ends a clause: "no fever, it is hot" is two clauses, so the "no" cannot
# reach "hot". A dash only counts between spaces ("short-lived" is one clause).
_CLAUSE_END = re.compile(r"[.,;:!?()\[\]{}\"\n\r\u2026]+|\s[-\u2013\u2014]+\s")
_TOKEN = re.compile(r"[a-z0-9]+")
_WORD = re.compile(r"^[a-z0-9]+\*?$")
_MIN_PREFIX = 3  # "p*" would match half the dictionary


def fold(text: str) -> str:
    """Lower case, accents off, straight apostrophes, English "n't" as " not"."""
    text = text.lower().translate(_APOSTROPHES).translate(_LIGATURES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    # "don't", "isn't", "can't" carry their negation inside the word; spell it out.
    return re.sub(r"n't\b", " not", text)


def _stem(word: str) -> str:
    """A crude common form: simple plurals and French feminine participles off.

    lips -> lip, rouges -> rouge, gonflees -> gonfle. Words of three letters stay
    ("pus" must not become "pu", a French word), and so do "-ss" endings (numbness).
    """
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("ee"):
        word = word[:-1]
    return word


# ---------------------------------------------------------------------------------------
# Validating the file. Pydantic checks shapes; these check the words themselves so that
# the error names the key holding the bad term.

def _check_term(term: str) -> str:
    if not term.strip():
        raise ValueError("a term must not be empty")
    for chunk in fold(term).split():
        if "|" in chunk or "*" in chunk:
            for alternative in chunk.split("|"):
                if not _WORD.match(alternative):
                    raise ValueError(f"'{term}': each | alternative must be one word, optionally "
                                     "ending in * (e.g. swell*|swollen)")
                if alternative.endswith("*") and len(alternative) - 1 < _MIN_PREFIX:
                    raise ValueError(f"'{term}': a wildcard needs at least {_MIN_PREFIX} letters "
                                     "before the *")
        elif not _TOKEN.search(chunk):
            raise ValueError(f"'{term}': '{chunk}' has no letters or digits")
    return term


def _check_word(word: str) -> str:
    if not _TOKEN.fullmatch(fold(word).strip()):
        raise ValueError(f"'{word}' must be one word (letters and digits, no spaces)")
    return word


_Term = Annotated[str, AfterValidator(_check_term)]
_SingleWord = Annotated[str, AfterValidator(_check_word)]
_Group = Annotated[tuple[_Term, ...], Field(min_length=1)]
_GroupName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
_LocaleCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}([-_][a-z0-9]+)?$")]


class _NegationFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    words: tuple[_SingleWord, ...] = Field(min_length=1)
    reach: int = Field(ge=1, le=8)
    stops: tuple[_SingleWord, ...] = ()
    cancels: tuple[_SingleWord, ...] = ()


class _LocaleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    phrase_gap: int = Field(default=2, ge=0, le=5)
    negation: _NegationFile
    urgent: dict[_GroupName, _Group] = Field(min_length=1)
    review: dict[_GroupName, _Group] = Field(default_factory=dict)


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    locales: dict[_LocaleCode, _LocaleFile] = Field(min_length=1)


# ---------------------------------------------------------------------------------------
# Compiled rules.

@dataclass(frozen=True)
class _Word:
    """One word of a term: exact forms (compared after _stem) and/or prefixes (word*)."""

    forms: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, token: str) -> bool:
        return _stem(token) in self.forms or token.startswith(self.prefixes)


@dataclass(frozen=True)
class Term:
    """A configured term: `text` as written in the file, compiled to words."""

    text: str
    group: str
    words: tuple[_Word, ...]
    # The term itself says "not" ("can't breathe", "n'arrive pas a respirer"): a
    # negation word in or before it is part of the symptom, never a reason to drop it.
    negative: bool


def _compile(text: str, group: str, negations: frozenset[str]) -> Term:
    words: list[_Word] = []
    for chunk in fold(text).split():
        if "|" in chunk or "*" in chunk:
            alternatives = chunk.split("|")
            words.append(_Word(frozenset(_stem(a) for a in alternatives if not a.endswith("*")),
                               tuple(a[:-1] for a in alternatives if a.endswith("*"))))
        else:  # may hold several words once folded: "s'etend" -> s, etend
            words.extend(_Word(frozenset({_stem(t)}), ()) for t in _TOKEN.findall(chunk))
    negative = any(_stem(n) in w.forms or n.startswith(w.prefixes) for w in words for n in negations)
    return Term(text, group, tuple(words), negative)


@dataclass(frozen=True)
class LocaleRules:
    """One language's terms and negation settings."""

    urgent: tuple[Term, ...]
    review: tuple[Term, ...]
    negations: frozenset[str]
    reach: int
    stops: frozenset[str]
    cancels: frozenset[str]
    phrase_gap: int

    def terms(self, level: str) -> tuple[Term, ...]:
        return self.urgent if level == URGENT else self.review


def _locale_rules(raw: _LocaleFile) -> LocaleRules:
    def words(values: tuple[str, ...]) -> frozenset[str]:
        return frozenset(fold(v).strip() for v in values)

    negations = words(raw.negation.words)

    def terms(groups: dict[str, tuple[str, ...]]) -> tuple[Term, ...]:
        return tuple(_compile(t, g, negations) for g, ts in groups.items() for t in ts)

    return LocaleRules(urgent=terms(raw.urgent), review=terms(raw.review), negations=negations,
                       reach=raw.negation.reach, stops=words(raw.negation.stops),
                       cancels=words(raw.negation.cancels), phrase_gap=raw.phrase_gap)


class TriageRules:
    """Validated, compiled triage rules for every locale of one triage.toml."""

    def __init__(self, locales: Mapping[str, LocaleRules], source: str = "") -> None:
        self.locales = dict(locales)
        self.source = source
        # Negation, stop and cancel words of every locale apply to every message: a
        # French patient may write "sans pus", which the English term "pus" also matches.
        # English and French negation words do not collide, so the union is safe; each
        # word keeps its own language's reach.
        self.negation_reach: dict[str, int] = {}
        for rules in self.locales.values():
            for word in rules.negations:
                self.negation_reach[word] = max(rules.reach, self.negation_reach.get(word, 0))
        self.stops = frozenset().union(*(r.stops for r in self.locales.values()))
        self.cancels = frozenset().union(*(r.cancels for r in self.locales.values()))

    @classmethod
    def load(cls, path: Path | None = None) -> TriageRules:
        """The packaged rules, or a clinic's own file replacing them; a one-line
        UserError naming the file and key when the file is wrong."""
        path = path or packaged_rules_path()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("triage", f"{path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError("triage", f"{path} cannot be read ({exc})") from None
        return cls.from_toml(text, str(path))

    @classmethod
    def from_toml(cls, text: str, source: str = "triage.toml") -> TriageRules:
        """Rules from the text of a triage.toml; `source` names it in errors."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError("triage", f"{source} is not valid TOML ({' '.join(str(exc).split())})"
                            ) from None
        try:
            raw = _RulesFile(locales=data)
        except ValidationError as exc:
            raise UserError("triage", f"{source}: {_first_problem(exc)}") from None
        return cls({code: _locale_rules(rules) for code, rules in raw.locales.items()}, source)

    def clauses(self, text: str) -> list[list[str]]:
        """`text` folded and cut at punctuation into clauses of words.

        A phrase and a negation both stay within one clause: in "no fever, it is hot"
        the "no" cannot reach "hot".
        """
        return [words for piece in _CLAUSE_END.split(fold(text))
                if (words := _TOKEN.findall(piece))]

    def is_negated(self, clause: list[str], positions: tuple[int, ...]) -> bool:
        """Whether a negation word cancels the term found at `positions` of `clause`.

        A negation counts when it stands before one of the term's words (before the
        first, or in a gap between two: "the area is not warm") at most its reach away,
        with no stop word from just after it up to that word ("no I have a fever": "I"
        stops it; so does "but", "mais") and no cancel word between ("ne ... que" means
        "only", "pas mal de" means "quite a lot of", "not sure" is no denial).
        """
        for k in range(positions[-1]):
            reach = self.negation_reach.get(clause[k])
            if reach is None or k in positions:
                continue
            following = next(p for p in positions if p > k)
            if (following - k <= reach
                    and not self.stops.intersection(clause[k + 1:following + 1])
                    and not self.cancels.intersection(clause[k + 1:following])):
                return True
        return False


def _first_problem(exc: ValidationError) -> str:
    """'en.urgent.infection[2]: <problem>' for the first error (and how many more)."""
    # A misspelt key also makes the right one "missing": name the misspelling first.
    error = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = [part for part in error["loc"][1:] if part != "[key]"]  # [1:]: our "locales" wrapper
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top)"
    if error["type"] == "extra_forbidden":
        problem = "unknown key; check its spelling against the packaged config/triage.toml"
    elif error["type"] == "string_pattern_mismatch" and error["loc"][-1] == "[key]":
        problem = (f"'{loc[-1]}' is not a valid name; top-level tables are locales such as [en], "
                   "groups are lower-case words such as infection")
    elif error["type"] == "missing":
        problem = "is required"
    else:
        problem = str(error["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {problem}{more}"


def _occurrences(term: Term, clause: list[str], gap: int) -> Iterator[tuple[int, ...]]:
    """Positions of each occurrence of `term` in `clause`: its words in order, with at
    most `gap` other words between two of them."""

    def rest(k: int, previous: int) -> tuple[int, ...] | None:
        if k == len(term.words):
            return ()
        for j in range(previous + 1, min(len(clause), previous + 2 + gap)):
            if term.words[k].matches(clause[j]):
                tail = rest(k + 1, j)
                if tail is not None:
                    return (j, *tail)
        return None

    for start, token in enumerate(clause):
        if term.words[0].matches(token):
            tail = rest(1, start)
            if tail is not None:
                yield (start, *tail)


def triage(text: str, locale: str, rules: TriageRules) -> Triage:
    """The triage level of one patient reply (not a STOP/START/HELP keyword).

    Every locale's terms are checked whatever `locale` says: a patient may answer in
    another language, and a missed emergency costs more than the rare false alarm a
    foreign word could raise. `locale` (known or not) only puts that language's
    matches first in `matched`.
    """
    clauses = rules.clauses(text)
    order = [locale, *(code for code in rules.locales if code != locale)]
    for level in LEVELS:
        matched: list[str] = []
        for code in order:
            language = rules.locales.get(code)
            if language is None:
                continue
            for term in language.terms(level):
                if term.text in matched:
                    continue
                if any(term.negative or not rules.is_negated(clause, positions)
                       for clause in clauses
                       for positions in _occurrences(term, clause, language.phrase_gap)):
                    matched.append(term.text)
        if matched:
            return Triage(level, tuple(matched))
    return Triage(ROUTINE, ())
