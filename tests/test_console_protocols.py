"""Console: protocols, their timelines and every message with its SMS size (read-only)."""

from __future__ import annotations

import html

import pytest

from aftercare.preview import preview
from aftercare.protocols import describe_timing
from aftercare.segments import measure
from console_kit import Console, console

__all__ = ["console"]


@pytest.mark.parametrize("role", ["frontdesk", "clinician", "admin"])
def test_every_role_sees_each_treatments_timeline(console: Console, role: str) -> None:
    console.sign_in(role)
    page = console.get("/protocols")
    assert page.status_code == 200
    text = html.unescape(page.text)
    for protocol in console.app.protocols:
        assert protocol.name in text
        assert f'href="/protocols/{protocol.key}"' in page.text
        for step in protocol.steps:
            assert describe_timing(step) in text, (protocol.key, step.key)
    assert 'aria-current="page"' in page.text.split(">Protocols<")[0].rsplit("<a", 1)[1]


def test_a_treatment_shows_every_message_per_locale_and_channel(console: Console) -> None:
    console.sign_in("frontdesk")
    page = console.get("/protocols/cellulite")
    assert page.status_code == 200
    text = html.unescape(page.text)
    app = console.app
    protocol = app.protocols.get("cellulite")
    locales = app.renderer.locales()
    assert set(locales) >= {"en", "fr"}
    for locale in locales:
        assert f"Language: {locale}" in text
        items = preview(app.settings, app.renderer, protocol, locale, today=app.clock())
        assert {item.channel for item in items} == {"sms", "email"}
        for item in items:
            assert item.rendered.text.strip() in text, (locale, item.step, item.channel)
            if item.channel == "sms":
                size = measure(item.rendered.text)
                assert (f"{len(item.rendered.text)} characters, {size.segments} SMS segment(s), "
                        f"{size.encoding}, {size.units} units.") in text
            else:
                assert item.rendered.subject and item.rendered.subject in text


def test_the_filter_shows_one_locale_and_one_channel(console: Console) -> None:
    console.sign_in("clinician")
    page = console.get("/protocols/cellulite", locale="fr", channel="sms")
    assert page.status_code == 200
    assert "Language: fr" in page.text and "Language: en" not in page.text
    assert "SMS segment" in page.text and "Subject:" not in page.text
    assert '<option value="fr" selected>' in page.text
    # Unknown filter values are ignored rather than trusted.
    page = console.get("/protocols/cellulite", locale="../../etc", channel="fax")
    assert "Language: en" in page.text and "Language: fr" in page.text


def test_an_unknown_treatment_is_not_found(console: Console) -> None:
    console.sign_in("frontdesk")
    page = console.get("/protocols/nope")
    assert page.status_code == 404
    page = console.get("/protocols/<script>")
    assert page.status_code == 404 and "<script>" not in page.text


def test_protocols_need_a_login(console: Console) -> None:
    for path in ("/protocols", "/protocols/cellulite"):
        answer = console.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_protocol_pages_are_read_only(console: Console) -> None:
    console.sign_in("admin")
    assert console.post("/protocols").status_code == 405
    assert console.post("/protocols/cellulite").status_code == 405
