"""Senders and the CLI at once: no lock errors, nothing lost, every SMS sent exactly once.

SQLite: one `aftercare run` sends while `aftercare import` enrolls 1,000 sessions. PostgreSQL: four
`aftercare run` share one database and thousands of due SMS while the CLI enrolls and reschedules patients.
Every process is a real `aftercare` process; SMS go through the fake Twilio, which fails a few sends
with 500 and 429 (retried by whichever sender claims them next).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes.twilio import RATE_LIMITED, SERVER_ERROR, FakeTwilio, Faults

from aftercare.models import MessageStatus
from conftest import midday_zone
from soak_kit import (
    LOCK_TROUBLE,
    ONE_DUE_AGO,
    TWO_DUE_AGO,
    exactly_once_problems,
    logged_sends,
    phone,
    soak_clinic,
    write_sessions,
)

SEED = 7
QUICK_FAULTS = Faults(rate=0.05, seed=SEED, kinds=(SERVER_ERROR, RATE_LIMITED))
SQLITE_BACKLOG = 200  # patients with two SMS due before the import starts: the daemon is busy
SQLITE_IMPORTED = 1000  # sessions imported while it sends, first_48h due for each
# Due SMS, two per patient. The four daemons send about 50 a second on a 2-CPU machine: 10,000
# takes over three minutes there, so CI sends 2,000; AFTERCARE_MANY_SENDERS_MESSAGES=10000
# runs the full size (docs/performance.md has its numbers).
PG_MESSAGES = int(os.environ.get("AFTERCARE_MANY_SENDERS_MESSAGES", "2000"))
PG_DAEMONS = 4
PG_ENROLLED = 2  # patients added and enrolled one by one meanwhile
PG_RESCHEDULED = 3  # booked sessions moved meanwhile


def test_cli_imports_1000_sessions_while_a_daemon_sends_on_sqlite(tmp_path: Path,
                                                                  fake_twilio: FakeTwilio) -> None:
    fake_twilio.inject(QUICK_FAULTS)
    zone = midday_zone()
    with soak_clinic(tmp_path, f"sqlite:///{tmp_path / 'clinic.db'}", fake_twilio) as clinic:
        backlog = write_sessions(tmp_path / "backlog.csv", range(SQLITE_BACKLOG),
                                 datetime.now(UTC) - TWO_DUE_AGO, timezone=zone)
        clinic.cli("import", str(backlog))
        backlog_by = datetime.now(UTC)
        backlog_refs = {f"S{n}" for n in range(SQLITE_BACKLOG)}
        daemon = clinic.start_daemon("sender")
        clinic.wait_for(lambda: clinic.count(MessageStatus.SENT) > 0, "the daemon to send")
        day = write_sessions(tmp_path / "day.csv",
                             range(SQLITE_BACKLOG, SQLITE_BACKLOG + SQLITE_IMPORTED),
                             datetime.now(UTC) - ONE_DUE_AGO, timezone=zone)
        imported = clinic.cli("import", str(day))
        # The daemon still had some of the backlog to send: it was busy for the whole import.
        backlog_left = sum(row.status == MessageStatus.PENDING for row in clinic.rows(due_by=backlog_by)
                           if row.ref in backlog_refs)
        due_by = datetime.now(UTC)
        clinic.wait_for(lambda: clinic.count(MessageStatus.PENDING, planned_by=due_by) == 0
                        and clinic.count(MessageStatus.SENDING) == 0, "every due SMS to be sent")
        stopped = daemon.stop()
        rows = clinic.rows(due_by=due_by)
        everything = clinic.rows()
        sessions = clinic.sessions()
        output = clinic.all_output()

    assert stopped == 0
    assert f"{SQLITE_IMPORTED} row(s): {SQLITE_IMPORTED} imported" in imported.stdout
    assert backlog_left > 0
    assert "database is locked" not in output.lower()
    assert not LOCK_TROUBLE.search(output), output
    assert "Traceback" not in output
    # Every enrolled session is there with its plan; what was due is sent, once.
    assert sessions == {"completed": SQLITE_BACKLOG + SQLITE_IMPORTED}
    refs = {row.ref for row in everything}
    assert refs == {f"S{n}" for n in range(SQLITE_BACKLOG + SQLITE_IMPORTED)}
    assert len(rows) == 2 * SQLITE_BACKLOG + SQLITE_IMPORTED
    assert exactly_once_problems(rows, fake_twilio) == []
    assert sum(fake_twilio.fault_counts.values()) > 0


def test_four_daemons_share_postgresql_while_the_cli_enrolls_and_reschedules(
    tmp_path: Path, fake_twilio: FakeTwilio, postgres_url: str
) -> None:
    fake_twilio.inject(QUICK_FAULTS)
    zone = midday_zone()
    patients = PG_MESSAGES // 2
    with soak_clinic(tmp_path, postgres_url, fake_twilio) as clinic:
        started = datetime.now(UTC)
        booked_at = (started + timedelta(days=3)).replace(microsecond=0)
        day = write_sessions(tmp_path / "day.csv", range(patients), started - TWO_DUE_AGO, timezone=zone,
                             next_session_at=lambda n: booked_at if n < PG_RESCHEDULED else None)
        clinic.cli("import", str(day))
        assert clinic.count(MessageStatus.PENDING, planned_by=started) == PG_MESSAGES
        booked = clinic.booked_sessions()
        daemons = [clinic.start_daemon(f"sender-{n}") for n in range(PG_DAEMONS)]
        clinic.wait_for(lambda: clinic.count(MessageStatus.SENT) > 0, "the daemons to send")

        # Meanwhile, the clinic's staff at the command line, at several terminals at once.
        session_at = (datetime.now(UTC) - TWO_DUE_AGO).isoformat(timespec="seconds")
        moved_to = booked_at + timedelta(days=1, hours=2)
        terminals = [[["patient", "add", "--name", f"Eve{n} Late", "--phone", phone(patients + n),
                       "--timezone", zone, "--channels", "sms", "--ref", f"E{n}"],
                      ["enroll", f"E{n}", "--treatment", "cellulite", "--session-at", session_at]]
                     for n in range(PG_ENROLLED)]
        terminals.append([["session", "reschedule", str(session_id), "--at", moved_to.isoformat()]
                          for session_id, _, _ in booked])

        def type_in(commands: list[list[str]]) -> int:
            """Run `commands` in turn; the least backlog still pending as one of them started."""
            least = PG_MESSAGES
            for command in commands:
                least = min(least, clinic.count(MessageStatus.PENDING, planned_by=started))
                clinic.cli(*command)
            return least

        with ThreadPoolExecutor(len(terminals)) as pool:
            # Every command starts while the daemons still have some of the backlog to send.
            backlog_left = min(pool.map(type_in, terminals))

        due_by = datetime.now(UTC)
        clinic.wait_for(lambda: clinic.count(MessageStatus.PENDING, planned_by=due_by) == 0
                        and clinic.count(MessageStatus.SENDING) == 0, "every due SMS to be sent", 600)
        stopped = [daemon.stop() for daemon in daemons]
        rows = clinic.rows(due_by=due_by)
        rescheduled = clinic.booked_sessions()
        sessions = clinic.sessions()
        logs = [daemon.output() for daemon in daemons]
        output = clinic.all_output()

    assert stopped == [0] * PG_DAEMONS
    assert backlog_left > 0
    assert not LOCK_TROUBLE.search(output), output
    assert "Traceback" not in output
    assert sessions == {"completed": patients + PG_ENROLLED, "booked": PG_RESCHEDULED}
    assert len(rows) == PG_MESSAGES + 2 * PG_ENROLLED
    assert {row.ref for row in rows if row.ref and row.ref.startswith("E")} == {
        f"E{n}" for n in range(PG_ENROLLED)}
    assert exactly_once_problems(rows, fake_twilio) == []
    assert [(id_, at, moves) for id_, at, moves in rescheduled] == [
        (id_, moved_to, 1) for id_, _, _ in booked]
    assert len(booked) == PG_RESCHEDULED
    # The four shared the work: each sent some. (Their logs' totals are not compared with
    # the rows: one CI run logged 6 of 2,004 sends in no pass's summary, every message
    # still sent exactly once by the fake's count above.)
    per_daemon = [logged_sends(log) for log in logs]
    assert all(count > 0 for count in per_daemon), per_daemon
    assert sum(per_daemon) <= len(rows), per_daemon
