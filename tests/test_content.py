"""Every message of every protocol renders, names the clinic, and fits the SMS budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aftercare.config import load_settings
from aftercare.preview import preview
from aftercare.protocols import ProtocolBook
from aftercare.rendering import Renderer

# GSM 03.38 basic character set (one septet each); anything else costs double or forces UCS-2.
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
           "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
SMS_LIMIT = {"en": 306}  # two concatenated GSM-7 segments

RENDERER = Renderer()
CASES = [(p, locale) for p in ProtocolBook.load() for locale in RENDERER.locales()]


def _items(protocol, locale, channel=None):  # type: ignore[no-untyped-def]
    settings = load_settings(None)
    settings.clinic.name, settings.clinic.phone = "Lumiere Aesthetics", "+1 212 555 0100"
    return preview(settings, RENDERER, protocol, locale, channel,
                   today=datetime(2026, 11, 10, 15, tzinfo=UTC))


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_every_step_renders_and_names_the_clinic(protocol, locale) -> None:  # type: ignore[no-untyped-def]
    items = _items(protocol, locale)
    assert {(i.step, i.channel) for i in items} == {
        (s.key, c) for s in protocol.steps for c in s.channels}
    for item in items:
        text = item.rendered.text
        assert "Lumiere Aesthetics" in text and "+1 212 555 0100" in text, item.step
        if item.channel == "email":
            assert item.rendered.subject and "\n" not in item.rendered.subject
            assert item.rendered.html and "Lumiere Aesthetics" in item.rendered.html


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_sms_fit_two_gsm7_segments(protocol, locale) -> None:  # type: ignore[no-untyped-def]
    for item in _items(protocol, locale, "sms"):
        text = item.rendered.text
        assert set(text) <= GSM7, (item.step, set(text) - GSM7)
        assert len(text) <= SMS_LIMIT[locale], (item.step, len(text))


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_48_hour_check_gives_the_emergency_number(protocol, locale) -> None:  # type: ignore[no-untyped-def]
    checks = [i for i in _items(protocol, locale) if i.step == "check_48h"]
    assert checks
    for item in checks:
        assert "911" in item.rendered.text


def test_first_sms_tells_how_to_opt_out() -> None:
    protocol = ProtocolBook.load().get("cellulite")
    first = _items(protocol, "en", "sms")[0]
    assert first.step == protocol.steps[0].key
    assert "Reply STOP to opt out" in first.rendered.text


def test_html_is_escaped_and_text_is_not() -> None:
    from aftercare.rendering import paragraphs

    assert paragraphs("Hi <Jane> & co\n\n- one\n- two") == [
        {"kind": "text", "text": "Hi <Jane> & co"}, {"kind": "list", "items": ["one", "two"]}]
    html = RENDERER._html.get_template("en/_email.html").render(
        subject="S", paragraphs=paragraphs("Hi <Jane> & co"), lang="en",
        clinic={"name": "A&B", "phone": "1", "email": "e", "booking_url": "",
                "emergency_number": "911"})
    assert "Hi &lt;Jane&gt; &amp; co" in html and "<Jane>" not in html
