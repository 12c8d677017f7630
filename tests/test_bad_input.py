"""Every user mistake: one line naming the field, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result

from conftest import Clinic

NOW = "2026-03-07T12:00-05:00"


def _tables(clinic: Clinic) -> tuple[int, ...]:
    return tuple(clinic.count(t) for t in ("patient", "course", "session", "message"))


def _assert_user_error(result: Result, field: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {field}:"), lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def jane(clinic: Clinic) -> Clinic:
    result = clinic.run("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                        "--email", "jane@example.com", "--ref", "J1")
    assert result.exit_code == 0, result.output
    return clinic


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--phone", "12345"], "phone"),
        (["--phone", "+1 212 555 01234567"], "phone"),
        (["--email", "jane@"], "email"),
        (["--phone", "+12125550123", "--timezone", "Mars/Olympus"], "timezone"),
        (["--phone", "+12125550123", "--locale", "xx"], "locale"),
        (["--phone", "+12125550123", "--channels", "sms,fax"], "channels"),
        (["--email", "jane@example.com", "--channels", "sms"], "channels"),
        ([], "phone"),
    ],
)
def test_patient_add_rejects_bad_fields(clinic: Clinic, args: list[str], field: str) -> None:
    result = clinic.run("patient", "add", "--name", "Jane Doe", *args)
    _assert_user_error(result, field)
    assert _tables(clinic) == (0, 0, 0, 0)


def test_duplicate_ref_is_refused(jane: Clinic) -> None:
    result = jane.run("patient", "add", "--name", "Other", "--phone", "+12125550199",
                      "--ref", "J1")
    _assert_user_error(result, "ref")
    assert jane.count("patient") == 1


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["J1", "--treatment", "botox-deluxe", "--session-at", "2026-03-07T10:00"], "treatment"),
        (["nobody", "--treatment", "cellulite", "--session-at", "2026-03-07T10:00"], "patient"),
        (["J1", "--treatment", "cellulite", "--session-at", "yesterday"], "session-at"),
        (["J1", "--treatment", "cellulite", "--session-at", "2026-03-07T25:00"], "session-at"),
        (["J1", "--treatment", "cellulite", "--session-at", "2026-03-09T10:00"], "session-at"),
        (["J1", "--treatment", "cellulite", "--session-at", "2026-03-07T10:00",
          "--next-session-at", "2026-03-06T10:00"], "next-session-at"),
        (["J1", "--treatment", "cellulite", "--session-at", "2026-03-07T10:00",
          "--next-session-at", "soon"], "next-session-at"),
        (["J1", "--treatment", "cellulite", "--session-at", "2026-03-07T10:00",
          "--session-number", "0"], "session-number"),
    ],
)
def test_enroll_rejects_bad_fields(jane: Clinic, args: list[str], field: str) -> None:
    result = jane.run("--now", NOW, "enroll", *args)
    _assert_user_error(result, field)
    assert _tables(jane) == (1, 0, 0, 0)


def test_bad_now_is_a_user_error(jane: Clinic) -> None:
    _assert_user_error(jane.run("send-due", "--now", "noon"), "now")
    _assert_user_error(jane.run("--now", "noon", "messages"), "now")


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("[clinic]\ntimezone = 'Mars/Olympus'\n", "clinic.timezone"),
        ("[clinic]\ncountry = 'ZZ'\n", "clinic.country"),
        ("[clinc]\nname = 'x'\n", "clinc: unknown key"),
        ("[messaging]\nquiet_start = '25:00'\n", "messaging.quiet_start"),
        ("[daemon]\npoll_seconds = -1\n", "daemon.poll_seconds"),
        ("[database]\nurl = 'mysql://x'\n", "database.url"),
        ("[clinic\nname = 'x'\n", "not valid TOML"),
        ("[sms]\nprovider = 'twilio'\n", "set exactly one of `from` and `messaging_service_sid`"),
        ("[sms]\nprovider = 'twilio'\nfrom = '+12125550100'\n"
         "messaging_service_sid = 'MG" + "0" * 32 + "'\n", "set exactly one"),
        ("[sms]\nfrom = '2125550100'\n", "sms.from: '2125550100' is not an E.164 number"),
        ("[sms]\nmessaging_service_sid = 'MG123'\n", "sms.messaging_service_sid"),
        ("[sms]\napi_base_url = 'ftp://x'\n", "sms.api_base_url"),
        ("[sms]\nprovider = 'carrier-pigeon'\n", "sms.provider"),
        ("[email]\ntls = 'ssl'\n", "email.tls"),
        ("[email]\nport = 0\n", "email.port"),
        ("[daemon]\nlease_seconds = 40\n", "daemon.lease_seconds (40) must be at least 60"),
        ("[sms]\nauth_token = 'secret'\n", "sms.auth_token: secrets are never read from files; "
         "set TWILIO_AUTH_TOKEN"),
        ("[email]\npassword = 'secret'\n", "set AFTERCARE_SMTP_PASSWORD in the environment"),
    ],
)
def test_broken_config_is_one_line(clinic: Clinic, text: str, mentions: str) -> None:
    broken = clinic.folder / "broken.toml"
    broken.write_text(text, encoding="utf-8")
    result = clinic.run("--config", str(broken), "messages")
    _assert_user_error(result, "config")
    assert mentions in result.stderr
    assert str(broken) in result.stderr


def test_missing_config_file(clinic: Clinic) -> None:
    result = clinic.run("--config", str(clinic.folder / "nope.toml"), "messages")
    _assert_user_error(result, "config")


def test_uninitialised_database_says_run_init(clinic: Clinic, tmp_path: Path) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'fresh.db'}'\n")
    result = clinic.run("--config", str(config), "messages")
    _assert_user_error(result, "database")
    assert "aftercare init" in result.stderr
    assert not (tmp_path / "fresh.db").exists()  # a wrong path leaves no empty file behind


def test_unknown_treatment_in_preview(clinic: Clinic) -> None:
    _assert_user_error(clinic.run("preview", "--treatment", "nope"), "treatment")
    _assert_user_error(clinic.run("preview", "--treatment", "cellulite", "--locale", "xx"),
                       "locale")


def test_bad_value_from_the_environment_names_the_variable(
    clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFTERCARE_CLINIC__TIMEZONE", "Mars/Olympus")
    result = clinic.run("messages")
    _assert_user_error(result, "config")
    assert "environment variable AFTERCARE_CLINIC__TIMEZONE" in result.stderr


def test_daemon_refuses_a_fixed_clock(clinic: Clinic) -> None:
    _assert_user_error(clinic.run("--now", NOW, "run"), "now")


@pytest.mark.parametrize("args, field", [
    (["patient", "show", "99999999999999999999999"], "patient"),
    (["patient", "show", "#99999999999999999999999"], "patient"),
    (["session", "cancel", "99999999999999999999999"], "session"),
    (["course", "withdraw", "99999999999999999999999"], "course"),
    (["inbox", "ack", "99999999999999999999999"], "reply"),
])
def test_an_id_no_database_can_hold_is_nobody(jane: Clinic, args: list[str], field: str) -> None:
    _assert_user_error(jane.run(*args), field)


def test_a_time_skipped_by_the_clocks_going_forward_is_refused(jane: Clinic) -> None:
    # 14 March 2027, New York: 02:00 EST becomes 03:00 EDT; 02:30 never happens.
    before = _tables(jane)
    result = jane.run("--now", "2027-03-10T12:00-05:00", "session", "book", "J1",
                      "--treatment", "cellulite", "--at", "2027-03-14T02:30")
    _assert_user_error(result, "at")
    assert "does not exist in America/New_York" in result.stderr
    assert _tables(jane) == before


def test_a_forgotten_patient_cannot_be_enrolled_or_booked(jane: Clinic) -> None:
    assert jane.run("patient", "forget", "J1").exit_code == 0
    before = _tables(jane)
    _assert_user_error(jane.run("--now", NOW, "enroll", "#1", "--treatment", "cellulite",
                                "--session-at", "2026-03-06T10:00"), "patient")
    _assert_user_error(jane.run("--now", NOW, "session", "book", "#1", "--treatment",
                                "cellulite", "--at", "2026-03-20T10:00"), "patient")
    assert _tables(jane) == before
