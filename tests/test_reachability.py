"""A dead route (invalid number, STOP, refused address) changes the patient's whole plan."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from test_dispatch import ScriptedChannel

from aftercare.errors import EMAIL_INVALID, PHONE_INVALID, SMS_OPTED_OUT, SendError
from conftest import Clinic, FixedClock, run_at, utc

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
    assert clinic.rows("SELECT status, count(*) FROM message GROUP BY status") == [
        ("cancelled", 7), ("failed", 1)]
    # Later passes send nothing more on that route.
    app = clinic.app(console=io.StringIO())
    counts = run_at(app.dispatcher(), SESSION + timedelta(days=60))
    assert counts.sent == 0


def test_sms_patient_with_an_address_gets_email_instead(clinic: Clinic) -> None:
    _enroll(clinic, "--phone", "+12125550123", "--email", "jane@example.com", "--channels", "sms")
    _dispatch(clinic, SendError("HTTP 400", permanent=True, code="21610", consequence=SMS_OPTED_OUT))
    rows = clinic.rows("SELECT step, channel, status, last_error FROM message ORDER BY id")
    sms = [r for r in rows if r[1] == "sms"]
    email = [r for r in rows if r[1] == "email"]
    assert sms[0] == ("first_48h", "sms", "failed", "21610: HTTP 400")
    assert all(r[2] == "cancelled" and r[3].endswith("sent by email instead") for r in sms[1:])
    # Every SMS that could still go has an email twin, visible in `aftercare messages`.
    assert sorted(r[0] for r in email) == sorted(r[0] for r in sms)
    # The failed message's email twin was due at once and went in the same pass.
    assert [r[2] for r in email if r[0] == "first_48h"] == ["sent"]
    assert all(r[2] == "pending" for r in email if r[0] != "first_48h")
    listed = clinic.json("messages", "--status", "pending")
    assert {m["channel"] for m in listed} == {"email"}
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
    statuses = dict(clinic.rows("SELECT channel, group_concat(DISTINCT status) FROM message "
                                "GROUP BY channel"))
    assert set(statuses["email"].split(",")) == {"failed", "cancelled"}
    assert set(statuses["sms"].split(",")) == {"sent", "pending"}


def test_permanent_failure_without_consequence_touches_nothing_else(clinic: Clinic) -> None:
    _enroll(clinic, "--phone", "+12125550123")
    _dispatch(clinic, SendError("HTTP 400: bad body", permanent=True, code="21602"))
    assert clinic.rows("SELECT status, count(*) FROM message GROUP BY status") == [
        ("failed", 1), ("pending", 7)]
    assert clinic.rows("SELECT sms_opted_out_at, phone_invalid_at FROM patient") == [(None, None)]


def test_sms_already_claimed_in_the_same_batch_also_goes_by_email(clinic: Clinic) -> None:
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
    assert rows[("first_48h", "email")] == rows[("arnica", "email")] == "sent"
    assert counts.sent == 2 and sms.sent == []
