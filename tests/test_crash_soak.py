"""Crash soak: `aftercare run` SIGKILLed at random moments while Twilio fails a fifth of the sends.

The short version of bench/crash_soak.py: a few hundred due SMS, a handful of kills. Whatever the kills
and faults interrupt, every SMS ends sent exactly once (adopted from Twilio when it had it) or failed
with its reason, and no patient gets one twice.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes.twilio import DROP_AFTER_STORE, SLOW_REPLY, FakeTwilio, Faults

from aftercare.models import MessageStatus
from conftest import midday_zone
from soak_kit import (
    ADOPTED,
    LOCK_TROUBLE,
    TWO_DUE_AGO,
    drain,
    exactly_once_problems,
    kill_at_random,
    soak_clinic,
    write_sessions,
)

SEED = 2026
PATIENTS = 150  # two due SMS each
KILLS = 5
TIMEOUT = 0.5  # sms.timeout_seconds; a slow reply comes after three times that
LEASE = 30  # daemon.lease_seconds: the smallest the config allows
# A daemon's life (start-up, then up to this long sending) sends a few dozen: every kill lands mid-queue.
MOST_SECONDS = 1.5
# Segments a second: a daemon's life sends at most 45 SMS however fast the machine, so the
# queue outlives the five kills (unpaced, a fast run drained it after four).
RATE = 30


def test_sigkilled_daemons_under_twilio_faults_send_every_sms_exactly_once(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    rng = random.Random(SEED)
    fake_twilio.inject(Faults(rate=0.2, seed=SEED, slow_seconds=3 * TIMEOUT))
    with soak_clinic(tmp_path, f"sqlite:///{tmp_path / 'soak.db'}", fake_twilio, timeout=TIMEOUT,
                     lease=LEASE, rate=RATE) as clinic:
        started = datetime.now(UTC)
        day = write_sessions(tmp_path / "day.csv", range(PATIENTS), started - TWO_DUE_AGO,
                             timezone=midday_zone())
        clinic.cli("import", str(day))
        assert clinic.count(MessageStatus.PENDING, planned_by=started) == 2 * PATIENTS

        killed = kill_at_random(clinic, rng, KILLS, most_seconds=MOST_SECONDS, planned_by=started)
        # The last daemon sends what the others left pending, then stops on SIGTERM.
        drain(clinic, "last", planned_by=started)
        interrupted = clinic.count(MessageStatus.SENDING)
        # Twilio recovers; a lease later, one pass settles the interrupted sends (recovery asks
        # Twilio and adopts what it has) and sends the rest. --now stands for the wait.
        fake_twilio.inject(None)
        later = datetime.now(UTC) + timedelta(seconds=LEASE + 2)
        clinic.cli("--now", later.isoformat(), "send-due")

        rows = clinic.rows(due_by=started)
        still_sending = clinic.count(MessageStatus.SENDING)
        output = clinic.all_output()

    assert killed == KILLS
    assert interrupted > 0  # the kills and faults left sends whose outcome only Twilio knew
    assert len(rows) == 2 * PATIENTS
    assert exactly_once_problems(rows, fake_twilio) == []
    assert still_sending == 0
    # Twilio had every slow or dropped-after-store message: each such row was adopted, not sent again.
    stored_unanswered = fake_twilio.fault_counts[SLOW_REPLY] + fake_twilio.fault_counts[DROP_AFTER_STORE]
    adopted = [row for row in rows if row.last_error == ADOPTED]
    assert stored_unanswered > 0
    assert len(adopted) >= stored_unanswered
    assert "Traceback" not in output
    assert not LOCK_TROUBLE.search(output), output
