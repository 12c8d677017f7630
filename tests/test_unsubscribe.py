"""One-click unsubscribe (RFC 8058): signed tokens, the email's headers as a real SMTP server
receives them, and the link itself through the real HTTP app."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fakes.smtp import FakeSmtp
from starlette.testclient import TestClient

from aftercare.app import App
from aftercare.errors import UserError
from aftercare.unsubscribe import (
    MAX_AGE,
    SECRET_ENV,
    InvalidToken,
    make_token,
    read_token,
    secret_from_env,
)
from aftercare.web import create_app
from conftest import Clinic, FixedClock, run_at, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

PUBLIC = "https://aftercare.clinic.example"
SECRET = "test-only-secret-key-0123456789abcdefghijklmnop"
KEY = SECRET.encode()
SESSION = utc("2026-03-02T10:30-05:00")
NOW = SESSION + timedelta(hours=1)  # the first_48h SMS and email are due
ESCAPED_NAME = "Lumiere &lt;b&gt;Aesthetics&lt;/b&gt; &amp; Co"


# --- tokens ---------------------------------------------------------------------------------

def test_a_token_round_trips_and_is_compact_and_url_safe() -> None:
    token = make_token(1234, NOW, KEY)
    assert re.fullmatch(r"[A-Za-z0-9_-]{38}", token)
    assert read_token(token, NOW, KEY, MAX_AGE) == 1234
    assert read_token(token, NOW + MAX_AGE, KEY, MAX_AGE) == 1234  # the last moment it works
    assert read_token(make_token(2**63, NOW, KEY), NOW, KEY, MAX_AGE) == 2**63
    assert make_token(1234, NOW, KEY) == token  # deterministic: nothing random in it
    assert make_token(1234, NOW + timedelta(seconds=1), KEY) != token


def _flip(token: str, at: int) -> str:
    other = "A" if token[at] != "A" else "B"
    return token[:at] + other + token[at + 1:]


@pytest.mark.parametrize(("token", "now", "reason"), [
    (make_token(7, NOW, b"another-secret-key-0123456789abcdef"), NOW, "forged"),
    (_flip(make_token(7, NOW, KEY), 5), NOW, "forged"),  # the patient id changed
    (_flip(make_token(7, NOW, KEY), 20), NOW, "forged"),  # the MAC changed
    (make_token(7, NOW, KEY), NOW + MAX_AGE + timedelta(seconds=1), "expired"),
    (make_token(7, NOW + timedelta(days=1), KEY), NOW, "not yet valid"),
    ("", NOW, "malformed"),
    ("not-a-token", NOW, "malformed"),
    (make_token(7, NOW, KEY) + "A", NOW, "malformed"),
    (make_token(7, NOW, KEY)[:-1], NOW, "malformed"),
    (make_token(7, NOW, KEY)[:-1] + "!", NOW, "malformed"),
    ("é" * 38, NOW, "malformed"),
], ids=["other-key", "other-id", "other-mac", "expired", "future", "empty", "short", "long",
        "truncated", "bad-char", "non-ascii"])
def test_bad_tokens_are_refused_with_their_reason(token: str, now: datetime, reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        read_token(token, now, KEY, MAX_AGE)
    assert caught.value.reason == reason
    assert "7" not in str(caught.value)  # nothing about the patient


def test_a_token_has_one_spelling() -> None:
    token = make_token(7, NOW, KEY)
    # 28 bytes in 38 characters: the last one carries 2 unused bits; another value for
    # them decodes to the same bytes but is not a token we issued.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last | 1]
    assert twin != token
    with pytest.raises(InvalidToken, match="malformed"):
        read_token(twin, NOW, KEY, MAX_AGE)


def test_tokens_need_an_aware_time_and_an_id_in_range() -> None:
    with pytest.raises(ValueError, match="aware"):
        make_token(1, datetime(2026, 3, 2), KEY)  # naive on purpose
    with pytest.raises(ValueError, match="out of range"):
        make_token(-1, NOW, KEY)
    with pytest.raises(ValueError, match="empty"):
        make_token(1, NOW, b"")


def test_the_secret_comes_from_the_environment_and_must_be_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert secret_from_env() is None
    monkeypatch.setenv(SECRET_ENV, "")
    assert secret_from_env() is None
    monkeypatch.setenv(SECRET_ENV, "too-short")
    with pytest.raises(UserError) as caught:
        secret_from_env()
    assert SECRET_ENV in str(caught.value) and "too-short" not in str(caught.value)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert secret_from_env() == KEY


# --- the email and the link, end to end --------------------------------------------------

@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def relay() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


@pytest.fixture
def app(clinic: Clinic, clock: FixedClock, relay: FakeSmtp,
        monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = clinic.config.read_text().replace('name = "Lumiere Aesthetics"',
                                               'name = "Lumiere <b>Aesthetics</b> & Co"')
    clinic.config.write_text(config + f"""
[web]
public_url = "{PUBLIC}"

[email]
provider = "smtp"
host = "{relay.host}"
port = {relay.port}
tls = "none"
timeout_seconds = 5
""", encoding="utf-8")
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--email",
                "jane@example.com", "--ref", "J1")
    clinic.json("--now", (SESSION + timedelta(minutes=30)).isoformat(), "enroll", "J1",
                "--treatment", "cellulite", "--session-at", SESSION.isoformat())
    # build_channels wires web.public_url and AFTERCARE_SECRET_KEY into the email channel.
    return clinic.app(clock=clock, console=io.StringIO())


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as made:
        yield made


def _one_click(client: TestClient, path: str) -> httpx.Response:
    """The POST a mail provider makes for RFC 8058 one-click unsubscribe."""
    return client.post(path, content="List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})


def _state(clinic: Clinic) -> list[tuple[Any, ...]]:
    """Everything a refused or repeated request must leave as it was."""
    return [*clinic.rows("SELECT id, status, last_error FROM message ORDER BY id"),
            *clinic.rows("SELECT * FROM patient"), *clinic.rows("SELECT * FROM event")]


def _emailed_link(app: App, relay: FakeSmtp) -> str:
    """The https link in the List-Unsubscribe header of the email the relay received."""
    assert run_at(app.dispatcher(), NOW).sent == 2  # the first_48h SMS and email
    [got] = relay.received
    mail = got.message
    header = str(mail["List-Unsubscribe"])
    found = re.fullmatch(r"<(https://[^>]+)>, <mailto:care@lumiere\.example\?subject=unsubscribe>",
                         header)
    assert found, header
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = found.group(1)
    assert link.startswith(f"{PUBLIC}/unsubscribe/")
    # As sent on the wire: the link in clear (not RFC 2047-encoded), folded at the comma.
    assert f"List-Unsubscribe: <{link}>,\r\n <mailto:".encode() in got.raw
    return link


def test_the_emailed_link_opts_the_patient_out_of_email_only(
        clinic: Clinic, app: App, relay: FakeSmtp, client: TestClient) -> None:
    link = _emailed_link(app, relay)
    sms_pending = clinic.count("message WHERE channel = 'sms' AND status = 'pending'")
    email_pending = clinic.count("message WHERE channel = 'email' AND status = 'pending'")
    assert sms_pending > 0 and email_pending > 0

    answer = _one_click(client, link.removeprefix(PUBLIC))
    assert answer.status_code == 200, answer.text
    assert "You are unsubscribed" in answer.text and ESCAPED_NAME in answer.text
    assert clinic.rows("SELECT email_opted_out_at IS NOT NULL, sms_opted_out_at FROM patient") \
        == [(1, None)]
    assert clinic.count("message WHERE channel = 'email' AND status = 'pending'") == 0
    assert clinic.count("message WHERE channel = 'email' AND status = 'cancelled'") == email_pending
    assert clinic.count("message WHERE channel = 'sms' AND status = 'pending'") == sms_pending
    assert clinic.rows("SELECT detail FROM event WHERE kind = 'patient.opted_out'") == [
        ("email (one-click unsubscribe)",)]

    before = _state(clinic)
    again = _one_click(client, link.removeprefix(PUBLIC))
    assert (again.status_code, again.text) == (200, answer.text)
    assert _state(clinic) == before


def test_the_page_behind_the_link_changes_nothing_and_its_button_unsubscribes(
        clinic: Clinic, client: TestClient) -> None:
    path = f"/unsubscribe/{make_token(1, NOW, KEY)}"
    before = _state(clinic)
    page = client.get(path)
    assert page.status_code == 200
    assert _state(clinic) == before  # link checkers and mail scanners follow links
    text = page.text
    assert ESCAPED_NAME in text and "<b>" not in text
    assert '<form method="post">' in text and "<script" not in text.lower()
    assert "jane" not in text.lower()  # nothing about the patient
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    # The button: a plain form POST (here without a body at all, like a bare POST).
    assert client.post(path).status_code == 200
    assert clinic.rows("SELECT email_opted_out_at IS NOT NULL FROM patient") == [(1,)]


@pytest.mark.parametrize("how", ["forged", "expired", "malformed", "tampered"])
def test_a_bad_link_is_refused_and_changes_nothing(clinic: Clinic, client: TestClient,
                                                   how: str) -> None:
    good = make_token(1, NOW, KEY)
    token = {"forged": make_token(1, NOW, b"not-our-secret-key-0123456789abcdef"),
             "expired": make_token(1, NOW - MAX_AGE - timedelta(seconds=1), KEY),
             "malformed": "not-a-token",
             "tampered": _flip(good, 30)}[how]
    before = _state(clinic)
    for answer in (client.get(f"/unsubscribe/{token}"),
                   _one_click(client, f"/unsubscribe/{token}")):
        assert answer.status_code == 400
        assert "not valid or has expired" in answer.text and "<form" not in answer.text
        assert ESCAPED_NAME in answer.text and "<b>" not in answer.text
    assert _state(clinic) == before


def test_without_the_secret_key_links_are_refused(clinic: Clinic, client: TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token(1, NOW, KEY)
    monkeypatch.delenv(SECRET_ENV)
    before = _state(clinic)
    assert _one_click(client, f"/unsubscribe/{token}").status_code == 403
    monkeypatch.setenv(SECRET_ENV, "short")
    assert _one_click(client, f"/unsubscribe/{token}").status_code == 403
    assert _state(clinic) == before


def test_a_link_for_nobody_on_file_answers_like_any_other(clinic: Clinic, client: TestClient,
                                                          app: App) -> None:
    good = _one_click(client, f"/unsubscribe/{make_token(1, NOW, KEY)}")
    before = _state(clinic)
    unknown = _one_click(client, f"/unsubscribe/{make_token(999, NOW, KEY)}")
    assert (unknown.status_code, unknown.text) == (good.status_code, good.text)
    assert _state(clinic) == before

    clinic.json("patient", "add", "--name", "Sam Roe", "--email", "sam@example.com", "--ref", "S1")
    [(sam,)] = clinic.rows("SELECT id FROM patient WHERE ref = 'S1'")
    assert clinic.run("patient", "forget", "S1").exit_code == 0
    before = _state(clinic)
    forgotten = _one_click(client, f"/unsubscribe/{make_token(sam, NOW, KEY)}")
    assert (forgotten.status_code, forgotten.text) == (good.status_code, good.text)
    assert _state(clinic) == before


def test_an_oversized_body_is_refused(clinic: Clinic, client: TestClient, app: App) -> None:
    before = _state(clinic)
    answer = client.post(f"/unsubscribe/{make_token(1, NOW, KEY)}",
                         content=b"x" * (app.settings.web.max_body_bytes + 1))
    assert answer.status_code == 413
    assert _state(clinic) == before


def test_nothing_about_the_patient_is_logged_at_info(clinic: Clinic, client: TestClient,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    token = make_token(1, NOW, KEY)
    with caplog.at_level("INFO", logger="aftercare"):
        _one_click(client, f"/unsubscribe/{token}")
        _one_click(client, f"/unsubscribe/{_flip(token, 30)}")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("aftercare"))
    assert "email opt-out recorded" in text and "refused: forged" in text
    assert token not in text and "jane" not in text.lower() and "patient 1" not in text


def test_tokens_are_read_on_the_service_clock() -> None:
    # The emailed token was issued on the dispatcher's clock; the page reads it later.
    token = make_token(1, datetime(2026, 3, 2, 16, 30, tzinfo=UTC), KEY)
    assert read_token(token, datetime(2026, 8, 29, 16, 30, tzinfo=UTC), KEY) == 1  # 180 days
    with pytest.raises(InvalidToken, match="expired"):
        read_token(token, datetime(2026, 8, 29, 16, 30, 1, tzinfo=UTC), KEY)
