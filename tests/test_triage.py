"""Triage of patients' replies (aftercare.triage, config/triage.toml) and the reply wording."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from aftercare.errors import UserError
from aftercare.resources import data_dir
from aftercare.segments import budget, measure
from aftercare.triage import (
    REVIEW,
    ROUTINE,
    URGENT,
    Triage,
    TriageRules,
    fold,
    packaged_rules_path,
    triage,
)


@pytest.fixture(scope="module")
def rules() -> TriageRules:
    return TriageRules.load()


# (text, patient's locale). Every urgent group, in both languages, with inflections,
# missing accents, shouting and punctuation.
URGENT_CASES = [
    # breathing (en)
    ("I'm having trouble breathing", "en"),
    ("It's hard to breathe since this morning", "en"),
    ("short of breath and dizzy", "en"),
    ("I can't breathe properly", "en"),
    ("wheezing a lot tonight", "en"),
    # face / throat swelling (en): swollen, swelling, swells; lip, lips
    ("my lips are swollen", "en"),
    ("Swelling of the face and throat!!", "en"),
    ("my tongue swells", "en"),
    ("swollen upper lip", "en"),
    ("my throat feels tight", "en"),
    # allergic reaction (en)
    ("I think I'm having an allergic reaction", "en"),
    ("Hives all over my arms", "en"),
    ("a rash appeared after treatment", "en"),
    # infection (en)
    ("I have a fever", "en"),
    ("FEVER 39 since last night", "en"),
    ("feeling feverish tonight", "en"),
    ("there is pus coming out", "en"),
    ("one spot is oozing yellow stuff", "en"),
    ("looks infected to me", "en"),
    ("the area is hot to the touch", "en"),
    ("redness spreading down my thigh", "en"),
    ("spreading redness around the injection site", "en"),
    ("skin is warm and red", "en"),
    # severe / worsening pain (en)
    ("severe pain in my thigh", "en"),
    ("pain is getting worse every day", "en"),
    ("painkillers aren't helping", "en"),
    # breathing (fr)
    ("J'ai du mal à respirer", "fr"),
    ("difficultés respiratoires depuis ce matin", "fr"),
    ("je n'arrive pas a respirer", "fr"),
    # face / throat swelling (fr): gonflé, gonflée(s), gonflement, enflé
    ("Lèvres gonflées!!", "fr"),
    ("mon visage est tout gonflé", "fr"),
    ("gonflement de la gorge", "fr"),
    ("la langue enflee", "fr"),
    ("ma gorge se serre", "fr"),
    # allergic reaction (fr)
    ("je crois que je fais une réaction allergique", "fr"),
    ("de l'URTICAIRE partout", "fr"),
    # infection (fr): fièvre/fievre, rouge/rouges/rougeur(s)
    ("j'ai de la fievre", "fr"),
    ("FIÈVRE depuis hier", "fr"),
    ("fiévreuse ce soir", "fr"),
    ("il y a du pus", "fr"),
    ("ça suinte un peu", "fr"),
    ("la zone est chaude et rouge", "fr"),
    ("mes cuisses sont rouges et chaudes", "fr"),
    ("la rougeur s'étend", "fr"),
    ("les rougeurs grandissent", "fr"),
    # severe / worsening pain (fr)
    ("une douleur insupportable", "fr"),
    ("j'ai de plus en plus mal", "fr"),
    ("le doliprane ne fait rien", "fr"),
]


@pytest.mark.parametrize(("text", "locale"), URGENT_CASES)
def test_red_flags_are_urgent(rules: TriageRules, text: str, locale: str) -> None:
    result = triage(text, locale, rules)
    assert result.level == URGENT, result
    assert result.matched


REVIEW_CASES = [
    ("the bruise is still there", "en"),
    ("bruising hasn't gone yet", "en"),
    ("small lumps under the skin", "en"),
    ("it feels bumpy", "en"),
    ("still numb after two weeks", "en"),
    ("a bit itchy", "en"),
    ("results look uneven", "en"),
    ("some swelling on my thigh", "en"),
    ("worried about scarring", "en"),
    ("j'ai encore un bleu", "fr"),
    ("des petites bosses sous la peau", "fr"),
    ("la peau est engourdie", "fr"),
    ("ça me démange", "fr"),
    ("le résultat est irrégulier", "fr"),
    ("un peu gonflée sur la cuisse", "fr"),
    ("hématome toujours là", "fr"),
    ("j'ai pas mal de boutons", "fr"),  # "pas mal de": quite a lot of, not a negation
]


@pytest.mark.parametrize(("text", "locale"), REVIEW_CASES)
def test_worth_a_look_is_review(rules: TriageRules, text: str, locale: str) -> None:
    result = triage(text, locale, rules)
    assert result.level == REVIEW, result
    assert result.matched


ROUTINE_CASES = [
    ("thanks!", "en"),
    ("All good, see you next week", "en"),
    ("Can I move my appointment to Friday?", "en"),
    ("what time is my next session?", "en"),
    ("is it ok to take a hot shower?", "en"),
    ("my phone number changed", "en"),  # not "numb"
    ("Ok", "en"),
    ("", "en"),
    ("merci beaucoup", "fr"),
    ("tout va bien", "fr"),
    ("je peux refaire du sport ?", "fr"),
    ("je reviendrai cet hiver", "fr"),  # "hiver" is not the English "hive"
    ("pas de problème pour respirer", "fr"),
]


@pytest.mark.parametrize(("text", "locale"), ROUTINE_CASES)
def test_everything_else_is_routine(rules: TriageRules, text: str, locale: str) -> None:
    assert triage(text, locale, rules) == Triage(ROUTINE, ())


# Plain negations: the on-call clinician must not be woken for these.
NEGATED_CASES = [
    ("no fever, all fine thanks", "en", ROUTINE),
    ("pas de fièvre, tout va bien", "fr", ROUTINE),
    ("the redness is gone, no swelling", "en", ROUTINE),
    ("I don't have a fever", "en", ROUTINE),
    ("I do not have any fever", "en", ROUTINE),
    ("not swollen at all", "en", ROUTINE),
    ("no pus and no fever", "en", ROUTINE),
    ("no redness or swelling", "en", ROUTINE),
    ("no trouble breathing", "en", ROUTINE),
    ("the skin isn't hot", "en", ROUTINE),
    ("no swelling on my face", "en", ROUTINE),
    ("no signs of infection", "en", ROUTINE),
    ("aucune rougeur", "fr", ROUTINE),
    ("sans pus", "fr", ROUTINE),
    ("il n'y a pas de pus", "fr", ROUTINE),
    ("pas de rougeur ni de gonflement", "fr", ROUTINE),
    ("je n'ai plus de fièvre", "fr", ROUTINE),
    ("ça ne gonfle pas", "fr", ROUTINE),
    ("ça va pas trop mal merci", "fr", ROUTINE),
    # a negated red flag next to a plain review term: review, not urgent
    ("no fever, just a bruise", "en", REVIEW),
    ("pas de fièvre, juste un bleu", "fr", REVIEW),
]


@pytest.mark.parametrize(("text", "locale", "level"), NEGATED_CASES)
def test_plain_negations_are_not_urgent(rules: TriageRules, text: str, locale: str,
                                        level: str) -> None:
    assert triage(text, locale, rules).level == level


# Negations that must not hide a red flag: an answer "no", a "but", a doubt, "only".
STILL_URGENT_CASES = [
    ("no, I have a fever", "en", "fever*"),
    ("no I have a fever", "en", "fever*"),
    ("no I have fever", "en", "fever*"),  # "I" stops the "no" (3 words away)
    ("no its hot", "en", "it|its|skin|area|site|spot|thigh|bump hot|warm"),
    ("pas de fièvre mais pus", "fr", "pus"),  # "mais" stops the "pas" (4 words away)
    ("not great, it is hot and red and spreading", "en",
     "red|redness|reddish|redder|reddening spread*|growing|expanding|bigger|larger|worse"),
    ("not sure, it is hot and red", "en", "hot|warm red|redness|reddish|redder"),
    ("not sure it is hot", "en", "it|its|skin|area|site|spot|thigh|bump hot|warm"),
    ("je n'ai pas de fièvre mais ça gonfle et il y a du pus", "fr", "pus"),
    ("no fever but my lips are swollen", "en",
     "face|lip|tongue|throat|mouth|eye|eyelid swell*|swollen|puff*"),
    ("no rash but I can't breathe", "en", "can't breath*"),
    ("pas de fièvre mais du pus", "fr", "pus"),
    ("il n'y a que du pus", "fr", "pus"),
    ("pas sûre, c'est chaud et rouge", "fr", "chaud*|brulant* roug*"),
    ("not sure if it's a fever", "en", "fever*"),
    ("I don't think I have a fever", "en", "fever*"),  # errs toward urgent
]


@pytest.mark.parametrize(("text", "locale", "term"), STILL_URGENT_CASES)
def test_a_negation_elsewhere_keeps_the_red_flag(rules: TriageRules, text: str, locale: str,
                                                 term: str) -> None:
    result = triage(text, locale, rules)
    assert result.level == URGENT and term in result.matched, result


def test_the_negated_term_is_not_what_decided(rules: TriageRules) -> None:
    result = triage("je n'ai pas de fièvre mais ça gonfle et il y a du pus", "fr", rules)
    assert result == Triage(URGENT, ("pus",))


def test_urgent_beats_review_and_only_urgent_terms_are_reported(rules: TriageRules) -> None:
    assert triage("the bruise is fine", "en", rules).level == REVIEW
    result = triage("the bruise is fine but I have a fever", "en", rules)
    assert result == Triage(URGENT, ("fever*",))
    assert triage("des bleus et de la fièvre", "fr", rules) == Triage(URGENT, ("fievr*",))


@pytest.mark.parametrize("locale", ["en", "fr", "de", ""])
def test_every_language_is_checked_whatever_the_locale(rules: TriageRules, locale: str) -> None:
    assert triage("j'ai de la fièvre", locale, rules).level == URGENT
    assert triage("my lips are swollen", locale, rules).level == URGENT
    assert triage("sans pus", locale, rules).level == ROUTINE  # "pus" is an English term too


def test_the_patients_language_comes_first_in_matched(rules: TriageRules) -> None:
    assert triage("fever, fièvre", "fr", rules).matched == ("fievr*", "fever*")
    assert triage("fever, fièvre", "en", rules).matched == ("fever*", "fievr*")
    assert triage("pus", "en", rules).matched == ("pus",)  # once, though both languages have it


@pytest.mark.parametrize(("text", "folded"), [
    ("Fièvre, ŒDÈME", "fievre, oedeme"),
    ("I don\u2019t", "i do not"),
    ("Gonflée", "gonflee"),
])
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


# --- the rules file ---------------------------------------------------------------------

GOOD_EN = """
[en.negation]
words = ["no"]
reach = 2

[en.urgent]
colour = ["purple"]
"""


def _load(tmp_path: Path, text: str) -> TriageRules:
    path = tmp_path / "triage.toml"
    path.write_text(text, encoding="utf-8")
    return TriageRules.load(path)


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD_EN.replace('"purple"', '"p*"'), "en.urgent.colour[0]: 'p*': a wildcard needs"),
    (GOOD_EN.replace('"purple"', '"purple", ""'), "en.urgent.colour[1]: a term must not be empty"),
    (GOOD_EN.replace('"purple"', '"swell*|swollen face|"'), "en.urgent.colour[0]: "),
    (GOOD_EN.replace('colour = ["purple"]', "colour = []"), "en.urgent.colour: "),
    (GOOD_EN.replace("reach = 2", "reachh = 2"), "en.negation.reachh: unknown key"),
    (GOOD_EN.replace("reach = 2", 'reach = "two"'), "en.negation.reach: "),
    (GOOD_EN.replace("reach = 2", "reach = 40"), "en.negation.reach: "),
    (GOOD_EN.replace("reach = 2", ""), "en.negation.reach: is required"),
    (GOOD_EN.replace('words = ["no"]', 'words = ["not at all"]'), "en.negation.words[0]: "),
    (GOOD_EN.replace("[en.negation]", "[en.negations]"), "en.negations: unknown key"),
    (GOOD_EN.replace("[en.urgent]", "[en.Urgent]"), "en.Urgent: unknown key"),
    (GOOD_EN.replace("en.", "English."), "'English' is not a valid name"),
    (GOOD_EN.replace("colour =", "Colour ="), "'Colour' is not a valid name"),
    ("", "(top): "),
    (GOOD_EN.replace("reach = 2", "reach = "), "is not valid TOML"),
])
def test_a_bad_rules_file_is_one_line_naming_the_key(tmp_path: Path, text: str,
                                                     expected: str) -> None:
    with pytest.raises(UserError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert caught.value.field == "triage"
    assert expected in message and str(tmp_path / "triage.toml") in message
    assert "\n" not in message


def test_a_missing_rules_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        TriageRules.load(tmp_path / "nope.toml")


def test_a_clinic_file_replaces_the_packaged_one(tmp_path: Path, rules: TriageRules) -> None:
    own = _load(tmp_path, GOOD_EN)
    assert triage("it turned purple", "en", own) == Triage(URGENT, ("purple",))
    assert triage("no purple", "en", own).level == ROUTINE
    # Replaced, not merged: the packaged terms are gone from the clinic's rules.
    assert triage("I have a fever", "en", own).level == ROUTINE
    assert triage("it turned purple", "en", rules).level == ROUTINE
    assert triage("I have a fever", "en", rules).level == URGENT


def test_the_packaged_file_is_found() -> None:
    path = packaged_rules_path()
    assert path.is_file() and path.name == "triage.toml"


def _packaged() -> dict[str, Any]:
    return tomllib.loads(packaged_rules_path().read_text(encoding="utf-8"))


def test_both_languages_have_the_same_groups() -> None:
    data = _packaged()
    for level in ("urgent", "review"):
        assert set(data["en"][level]) == set(data["fr"][level]), level


def test_every_group_cites_the_facts() -> None:
    # Each group's comment block names a line of shared/clinical-facts.md and a source.
    lines = packaged_rules_path().read_text(encoding="utf-8").splitlines()
    section = ""
    for number, line in enumerate(lines):
        if line.startswith("["):
            section = line
        if section.endswith((".urgent]", ".review]")) and re.match(r"^[a-z_]+ = \[", line):
            comments = []
            for above in reversed(lines[:number]):
                if not above.startswith("#"):
                    break
                comments.append(above)
            block = " ".join(comments)
            assert "Facts" in block and re.search(r"\bS[0-4]\b", block), f"{section} line {number + 1}"


# --- reply wording ----------------------------------------------------------------------

CLINICS = {
    "en": {"name": "Lumiere Aesthetics and Laser Clinic", "phone": "+1 212 555 0100",
           "email": "reception@lumiere-aesthetics.example", "emergency_number": "911"},
    "fr": {"name": "Institut Lumiere Esthetique et Laser", "phone": "+33 1 42 68 00 00",
           "email": "accueil@lumiere-esthetique.example", "emergency_number": "15"},
}
UNSET = object()


@pytest.mark.parametrize("locale", ["en", "fr"])
@pytest.mark.parametrize("reply", ["urgent", "acknowledge", "help"])
@pytest.mark.parametrize("patient", [{"first_name": "Marie-Christine"}, None, UNSET],
                         ids=["known", "none", "absent"])
def test_replies_fit_and_say_how_to_reach_help(locale: str, reply: str, patient: object) -> None:
    env = Environment(loader=FileSystemLoader(str(data_dir("templates"))),
                      undefined=StrictUndefined)
    clinic = CLINICS[locale]
    context: dict[str, Any] = {"clinic": clinic}
    if patient is not UNSET:
        context["patient"] = patient
    text = env.get_template(f"{locale}/replies/{reply}.sms.txt").render(context)

    size = measure(text)
    assert size.encoding == "GSM-7", size.forcing_ucs2
    assert size.segments <= budget(locale), size.describe()
    assert re.search(rf"(?<![\d+]){re.escape(clinic['emergency_number'])}(?!\d)", text), text
    assert clinic["phone"] in text and clinic["name"] in text
    assert ("Marie-Christine" in text) == (patient is not None and patient is not UNSET)
    assert "  " not in text and " ," not in text
    if reply == "help":
        assert "STOP" in text


@pytest.mark.parametrize(("text", "locale"), [
    ("no doubt it is infected, there is pus", "en"),
    ("not just a fever, my face is swelling", "en"),
    ("sans doute une infection, il y a du pus", "fr"),
    ("pas seulement de la fievre", "fr"),
])
def test_a_negation_that_is_not_about_the_symptom_keeps_it_urgent(
        rules: TriageRules, text: str, locale: str) -> None:
    assert triage(text, locale, rules).level == "urgent"
