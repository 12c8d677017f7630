"""Every message of every protocol renders, names the clinic, and fits the SMS budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aftercare.config import load_settings
from aftercare.preview import PreviewItem, preview
from aftercare.protocols import Protocol, ProtocolBook
from aftercare.rendering import Renderer
from aftercare.segments import budget, measure

RENDERER = Renderer()
CASES = [(p, locale) for p in ProtocolBook.load() for locale in RENDERER.locales()]


def _items(protocol: Protocol, locale: str, channel: str | None = None) -> list[PreviewItem]:
    settings = load_settings(None)
    settings.clinic.name, settings.clinic.phone = "Lumiere Aesthetics", "+1 212 555 0100"
    return preview(settings, RENDERER, protocol, locale, channel,
                   today=datetime(2026, 11, 10, 15, tzinfo=UTC))


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_every_step_renders_and_names_the_clinic(protocol: Protocol, locale: str) -> None:
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
def test_sms_fit_the_locale_budget(protocol: Protocol, locale: str) -> None:
    for item in _items(protocol, locale, "sms"):
        size = measure(item.rendered.text)
        assert size.segments <= budget(locale), (item.step, size.describe())
        if locale == "en":
            assert size.encoding == "GSM-7", (item.step, size.forcing_ucs2)


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_48_hour_check_gives_the_emergency_number(protocol: Protocol, locale: str) -> None:
    checks = [i for i in _items(protocol, locale) if i.step == "check_48h"]
    assert checks
    for item in checks:
        assert "911" in item.rendered.text


@pytest.mark.parametrize(("protocol", "locale"), CASES, ids=[f"{p.key}-{lc}" for p, lc in CASES])
def test_first_sms_tells_how_to_opt_out(protocol: Protocol, locale: str) -> None:
    first = _items(protocol, locale, "sms")[0]
    assert first.step == protocol.steps[0].key
    assert "STOP" in first.rendered.text
    if locale == "en":
        assert "Reply STOP to opt out" in first.rendered.text


def test_every_protocol_has_the_same_eleven_steps() -> None:
    expected = ["first_48h", "arnica", "activity", "check_48h", "routine", "next_session",
                "session_reminder", "rebook", "rebook_follow_up", "results", "maintenance"]
    for protocol in ProtocolBook.load():
        assert [s.key for s in protocol.steps] == expected, protocol.key
        assert protocol.maintenance is not None, protocol.key


def test_html_is_escaped_and_text_is_not() -> None:
    from aftercare.rendering import paragraphs

    assert paragraphs("Hi <Jane> & co\n\n- one\n- two") == [
        {"kind": "text", "text": "Hi <Jane> & co"}, {"kind": "list", "items": ["one", "two"]}]
    html = RENDERER.layout("en").render(
        subject="S", paragraphs=paragraphs("Hi <Jane> & co"), lang="en",
        clinic={"name": "A&B", "phone": "1", "email": "e", "booking_url": "",
                "emergency_number": "911"})
    assert "Hi &lt;Jane&gt; &amp; co" in html and "<Jane>" not in html
