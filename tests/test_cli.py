"""The CLI's JSON outputs, listings, preview, demo and entry points."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aftercare.demo import run_demo
from conftest import Clinic

MESSAGE_KEYS = {"id", "patient_id", "step", "channel", "send_after", "status", "attempts",
                "provider_id", "last_error", "sent_at", "delivered_at", "flag"}
COUNT_KEYS = {"sent", "failed", "retrying", "deferred", "expired", "cancelled"}


def _enrolled(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--ref", "J1")
    clinic.json("patient", "add", "--name", "Sam Roe", "--email", "sam@example.com")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "2", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30")


def test_messages_json_lists_every_field_and_filters(clinic: Clinic) -> None:
    _enrolled(clinic)
    everything = clinic.json("messages")
    assert len(everything) == clinic.count("message") > 0
    assert all(set(m) == MESSAGE_KEYS for m in everything)
    assert [m["send_after"] for m in everything] == sorted(m["send_after"] for m in everything)
    janes = clinic.json("messages", "--patient", "J1")
    assert {m["patient_id"] for m in janes} == {1} and {m["channel"] for m in janes} == {"sms"}
    assert clinic.json("messages", "--status", "sent") == []


def test_send_due_json_counts_and_results_in_messages(clinic: Clinic) -> None:
    _enrolled(clinic)
    counts = clinic.json("send-due", "--now", "2026-03-02T11:30-05:00")
    assert counts == {"sent": 2, "failed": 0, "retrying": 0, "deferred": 0, "expired": 0,
                      "cancelled": 0}
    assert set(counts) == COUNT_KEYS
    sent = clinic.json("messages", "--status", "sent")
    assert len(sent) == 2
    for message in sent:
        assert message["attempts"] == 1 and message["provider_id"].startswith("console-")
        assert message["sent_at"] == "2026-03-02T16:30:00+00:00"
    # A clock without an offset is read in the clinic's zone (New York, UTC-5 in March).
    again = clinic.json("send-due", "--now", "2026-03-02T14:30")
    assert again["sent"] == 2


def test_human_listing_shows_local_times(clinic: Clinic) -> None:
    _enrolled(clinic)
    out = clinic.run("messages", "--patient", "J1").stdout
    assert "2026-03-02 11:30 EST" in out and "first_48h" in out and "pending" in out


def test_preview_shows_every_sms(clinic: Clinic) -> None:
    out = clinic.run("preview", "--treatment", "cellulite", "--channel", "sms").stdout
    for step in ("first_48h", "arnica", "activity", "check_48h", "routine", "next_session"):
        assert f"=== {step} [sms]" in out
    assert "Lumiere Aesthetics" in out and "characters, 2 segments, GSM-7" in out


def test_demo_plays_every_patients_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    counts = run_demo(out, day=datetime(2026, 11, 10, 12, tzinfo=UTC))
    text = out.getvalue()
    assert counts.sent == 32 and counts.failed == counts.expired == 0
    for name in ("Jane Doe", "Maria Lopez", "Claire Martin"):
        assert f"{name} (" in text
    assert text.count("Reply STOP to opt out") == 2  # Jane's and Maria's first SMS
    assert "Demo finished: 32 sent." in text
    assert list(tmp_path.iterdir()) == []  # the throw-away database is gone


def test_python_dash_m_and_version() -> None:
    result = subprocess.run([sys.executable, "-m", "aftercare", "--help"],
                            capture_output=True, text=True, check=True)
    for command in ("init", "patient", "enroll", "messages", "send-due", "run", "preview",
                    "demo"):
        assert command in result.stdout
    version = subprocess.run([sys.executable, "-m", "aftercare", "--version"],
                             capture_output=True, text=True, check=True)
    assert "0.1.0" in version.stdout


def test_json_output_is_one_document_even_with_console_channels(clinic: Clinic) -> None:
    _enrolled(clinic)
    result = clinic.run("send-due", "--now", "2026-03-02T11:30-05:00", "--json")
    assert json.loads(result.stdout)["sent"] == 2
    assert "Reply STOP" in result.stderr  # the console channel printed to stderr


def test_no_config_at_all_uses_local_sqlite_and_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner, Result

    from aftercare.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AFTERCARE_CONFIG", raising=False)

    def run(*args: str) -> Result:
        result = CliRunner().invoke(cli, list(args), obj={})
        assert result.exit_code == 0, result.output
        return result

    run("init")
    assert (tmp_path / "aftercare.db").is_file()
    run("patient", "add", "--name", "Jane Doe", "--phone", "212 555 0123", "--ref", "J1")
    run("--now", "2026-03-02T11:00", "enroll", "J1", "--treatment", "cellulite",
        "--session-at", "2026-03-02T10:30")
    out = run("send-due", "--now", "2026-03-02T11:30").stdout
    assert "SMS #1 to Jane Doe <+12125550123>" in out  # printed by the console channel
    assert "Aftercare Demo Clinic" in out and out.rstrip().endswith("0 cancelled")


def test_config_found_through_the_environment(clinic: Clinic, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from aftercare.cli import cli

    monkeypatch.setenv("AFTERCARE_CONFIG", str(clinic.config))
    result = CliRunner().invoke(cli, ["init"], obj={})
    assert str(clinic.db_path) in result.stdout
    monkeypatch.setenv("AFTERCARE_DATABASE__URL", f"sqlite:///{clinic.folder / 'other.db'}")
    result = CliRunner().invoke(cli, ["init"], obj={})
    assert "other.db" in result.stdout and "created" in result.stdout


def test_preview_into_a_closed_pipe_exits_quietly(clinic: Clinic) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "aftercare", "--config", str(clinic.config),
                             "preview", "--treatment", "cellulite"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    proc.wait(timeout=30)  # click exits 1 on a broken pipe, quietly
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_french_patient_gets_french_gsm7_messages(clinic: Clinic) -> None:
    from aftercare.segments import measure

    clinic.json("patient", "add", "--name", "Françoise Lefèvre", "--phone", "+33612345678",
                "--email", "f@example.fr", "--timezone", "Europe/Paris", "--locale", "fr",
                "--ref", "F1")
    clinic.json("--now", "2026-03-02T12:00+01:00", "enroll", "F1", "--treatment", "mesobotox",
                "--session-at", "2026-03-02T11:00+01:00", "--next-session-at",
                "2026-06-01T11:00+02:00")
    clinic.json("send-due", "--now", "2026-03-02T12:00+01:00")
    [(sms,)] = clinic.rows("SELECT body FROM message WHERE channel = 'sms' AND status = 'sent'")
    [(subject, email)] = clinic.rows("SELECT subject, body FROM message WHERE channel = 'email' "
                                     "AND status = 'sent'")
    assert "Francoise" in sms and "ç" not in sms  # ç has a GSM-7 twin; keeps the SMS in GSM-7
    assert "STOP" in sms and "Lumiere Aesthetics" in sms
    size = measure(sms)
    assert size.encoding == "GSM-7" and size.segments <= 3
    assert "Françoise" in email  # emails keep every character
    assert subject.startswith("Lumiere Aesthetics : ")
    assert clinic.app().renderer.locales() == ("en", "fr")
    clinic.json("send-due", "--now", "2026-05-30T10:00+02:00")
    [(booked,)] = clinic.rows("SELECT body FROM message WHERE step = 'next_session' "
                              "AND channel = 'email'")
    assert "lundi 1 juin" in booked
