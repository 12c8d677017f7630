"""The history says who made each change: the CLI, the service itself, or a staff member."""

from __future__ import annotations

import pytest

from aftercare.replies import Incoming, settle, store
from conftest import Clinic

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL


def test_cli_changes_are_recorded_as_cli_and_a_stop_as_the_service(clinic: Clinic) -> None:
    assert clinic.run("patient", "add", "--name", "Ana Lee", "--phone", "+12125550123",
                      "--ref", "P1").exit_code == 0
    assert clinic.run("patient", "opt-out", "P1", "--channel", "sms").exit_code == 0
    assert clinic.run("patient", "opt-in", "P1", "--channel", "sms").exit_code == 0
    app = clinic.app()
    with app.db() as db:
        reply_id = store(db, Incoming("SM1", "+12125550123", "+12125550100", "STOP"), app.clock()).id
    settle(app, reply_id or 0, queue=True)
    events = clinic.json("patient", "history", "P1")
    by_kind = [(e["kind"], e["by"]) for e in events]
    assert by_kind[:2] == [("patient.opted_out", "cli"), ("patient.opted_in", "cli")]
    assert ("patient.opted_out", "aftercare") in by_kind[2:]
    text = clinic.run("patient", "history", "P1").stdout
    assert "by cli" in text and "by aftercare" in text
