"""A dead route (invalid number, STOP, refused address) changes the patient's whole plan."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from test_dispatch import ScriptedChannel

from aftercare.errors import EMAIL_INVALID, PHONE_INVALID, SMS_OPTED_OUT, SendError
from conftest import Clinic, FixedClock, run_at, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

SESSION = utc("2026-03-02T10:30-05:00")
DUE = SESSION + timedelta(hours=1)


def _enroll(clinic: Clinic, *contact: str) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", *contact, "--ref", "J1")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30")


def _dispatch(clinic: Clinic, error: SendError, channel: str = "sms") -> ScriptedChannel:
    scripted = ScriptedChannel(channel, [error])
    app = clinic.app(clock=FixedClock(DUE), console=io.StringIO())
    app.channels[channel] = scripted
    run_at(app.dispatcher(), DUE)
    return scripted


@pytest.mark.parametrize(("consequence", "flag"), [(SMS_OPTED_OUT, "sms_opted_out_at"),
                                                   (PHONE_INVALID, "phone_invalid_at")])
def test_sms_only_patient_has_every_pending_sms_cancelled(clinic: Clinic, consequence: str,
                                                          flag: str) -> None:
    _enroll(clinic, "--phone", "+12125550123")
    _dispatch(clinic, SendError("HTTP 400", permanent=True, code="21610", consequence=consequence))
    assert clinic.rows(f"SELECT {flag} IS NOT NULL FROM patient") == [(1,)]
    assert clinic.rows("SELECT status, count(*) FROM message GROUP BY status ORDER BY status") == [
        ("cancelled", 7), ("failed", 1)]
    # Later passes send nothing more on that route.
    app = clinic.app(console=io.StringIO())
    counts = run_at(app.dispatcher(), SESSION + timedelta(days=60))
    assert counts.sent == 0


def test_sms_only_consent_is_kept_when_the_sms_route_closes(clinic: Clinic) -> None:
    # The clinic has an address but the patient agreed to SMS only: a STOP must not
    # turn email on behind the patient's back (a desk opt-out would not either).
    _enroll(clinic, "--phone", "+12125550123", "--email", "jane@example.com", "--channels", "sms")
    _dispatch(clinic, SendError("HTTP 400", permanent=True, code="21610", consequence=SMS_OPTED_OUT))
    rows = clinic.rows("SELECT step, channel, status, last_error FROM message ORDER BY id")
    assert rows[0] == ("first_48h", "sms", "failed", "21610: HTTP 400")
    assert all(r[1] == "sms" and r[2] == "cancelled" for r in rows[1:])
    assert clinic.rows("SELECT channels FROM patient") == [("sms",)]
    # The history says why the plan changed, as it does for a desk opt-out.
    kinds = [k for (k,) in clinic.rows("SELECT kind FROM event ORDER BY id")]
    assert "patient.opted_out" in kinds
    assert clinic.count("event WHERE kind = 'message.cancelled'") == 7


@pytest.mark.sqlite_only  # compares two more clinics of its own; planning is the same code
def test_a_stop_and_a_desk_opt_out_leave_the_same_plan(clinic: Clinic, tmp_path: Path) -> None:
    plans = []
    for how in ("stop", "desk"):
        folder = tmp_path / how
        folder.mkdir()
        config = folder / "aftercare.toml"
        config.write_text(clinic.config.read_text().replace(
            str(clinic.db_path), str(folder / "c.db")), encoding="utf-8")
        other = Clinic(folder, config, folder / "c.db")
        assert other.run("init").exit_code == 0
        _enroll(other, "--phone", "+12125550123", "--email", "jane@example.com")
        if how == "stop":
            _dispatch(other, SendError("HTTP 400", permanent=True, code="21610",
                                       consequence=SMS_OPTED_OUT))
        else:
            _dispatch(other, SendError("HTTP 503", permanent=False))  # nothing closes
            assert other.run("--now", DUE.isoformat(), "patient", "opt-out", "J1",
                             "--channel", "sms").exit_code == 0
        plans.append(other.rows("SELECT step, channel, status FROM message "
                                "WHERE status IN ('pending', 'sent') ORDER BY step, channel"))
    assert plans[0] == plans[1]
    assert {channel for _step, channel, _status in plans[0]} == {"email"}


def test_email_stands_in_for_an_sms_only_step_where_the_patient_consented(
        clinic: Clinic, tmp_path: Path) -> None:
    # A clinic protocol whose arnica advice goes by SMS only.
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    packaged = Path(__file__).resolve().parents[1] / "config" / "protocols" / "cellulite.toml"
    text = packaged.read_text(encoding="utf-8")
    start = text.index('key = "arnica"')
    end = text.index("[[steps]]", start)
    text = text[:start] + text[start:end].replace('channels = ["sms", "email"]',
                                                  'channels = ["sms"]') + text[end:]
    (protocols / "cellulite.toml").write_text(text, encoding="utf-8")
    clinic.config.write_text(clinic.config.read_text().replace(
        "[messaging]\n", f"[messaging]\nprotocols_dir = \"{protocols}\"\n"), encoding="utf-8")
    _enroll(clinic, "--phone", "+12125550123", "--email", "jane@example.com")
    assert clinic.rows("SELECT channel FROM message WHERE step = 'arnica'") == [("sms",)]
    _dispatch(clinic, SendError("HTTP 400", permanent=True, code="21211", consequence=PHONE_INVALID))
    rows = dict(((step, channel), status) for step, channel, status in clinic.rows(
        "SELECT step, channel, status FROM message WHERE step = 'arnica'"))
    assert rows == {("arnica", "sms"): "cancelled", ("arnica", "email"): "pending"}
    assert clinic.rows("SELECT channels FROM patient") == [("sms,email",)]


def test_existing_email_twin_is_not_doubled(clinic: Clinic) -> None:
    _enroll(clinic, "--phone", "+12125550123", "--email", "jane@example.com")
    before = clinic.count("message WHERE channel = 'email'")
    _dispatch(clinic, SendError("HTTP 400", permanent=True, code="21211", consequence=PHONE_INVALID))
    assert clinic.count("message WHERE channel = 'email'") == before


def test_refused_address_stops_email_and_leaves_sms(clinic: Clinic) -> None:
    _enroll(clinic, "--phone", "+12125550123", "--email", "jane@example.com")
    _dispatch(clinic, SendError("SMTP 550", permanent=True, code="550", consequence=EMAIL_INVALID),
              channel="email")
    assert clinic.rows("SELECT email_invalid_at IS NOT NULL, phone_invalid_at FROM patient") == [
        (1, None)]
    statuses = clinic.rows("SELECT DISTINCT channel, status FROM message")
    assert {status for channel, status in statuses if channel == "email"} == {"failed",
                                                                              "cancelled"}
    assert {status for channel, status in statuses if channel == "sms"} == {"sent", "pending"}


def test_permanent_failure_without_consequence_touches_nothing_else(clinic: Clinic) -> None:
    _enroll(clinic, "--phone", "+12125550123")
    _dispatch(clinic, SendError("HTTP 400: bad body", permanent=True, code="21602"))
    assert clinic.rows("SELECT status, count(*) FROM message GROUP BY status ORDER BY status") == [
        ("failed", 1), ("pending", 7)]
    assert clinic.rows("SELECT sms_opted_out_at, phone_invalid_at FROM patient") == [(None, None)]


def test_sms_already_claimed_in_the_same_batch_is_not_sent(clinic: Clinic) -> None:
    # Two SMS due together (held by quiet hours); the first reveals the number is invalid.
    clinic.json("patient", "add", "--name", "Kim Lee", "--phone", "+12125550125",
                "--email", "kim@example.com", "--channels", "sms", "--ref", "K1")
    clinic.json("--now", "2026-03-02T18:30-05:00", "enroll", "K1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T18:00")
    morning = utc("2026-03-03T09:00-05:00")
    sms = ScriptedChannel("sms", [SendError("HTTP 400", permanent=True, code="21211",
                                            consequence=PHONE_INVALID)])
    app = clinic.app(clock=FixedClock(morning), console=io.StringIO())
    app.channels["sms"] = sms
    counts = run_at(app.dispatcher(), morning)
    rows = dict(((step, channel), status) for step, channel, status in clinic.rows(
        "SELECT step, channel, status FROM message"))
    assert rows[("first_48h", "sms")] == "failed"
    assert rows[("arnica", "sms")] == "cancelled"  # claimed in the same batch
    assert ("arnica", "email") not in rows  # Kim consented to SMS only
    assert counts.sent == 0 and sms.sent == []
