"""Crash soak, long version: thousands of due SMS, `aftercare run` SIGKILLed at random moments, Twilio faulty.

A clinic on SQLite imports sessions whose SMS are all due; daemons are started and SIGKILLed at seeded
random moments while the fake Twilio fails a fraction of the sends (500, 429, a reply slower than the
timeout after accepting, connections dropped before or after accepting). Then a daemon drains the
queue, and a last one, started a lease after the newest claim, runs until recovery has settled every
interrupted send (faults still on). Every SMS must end sent exactly once or failed with its reason.

Run: python bench/crash_soak.py [--messages 5000] [--kills 20] [--fault-rate 0.2] [--seed 1]
Prints numbers for docs/performance.md; exits 1 if a message was sent twice, lost or left unsettled.
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake Twilio and the soak kit of the tests

from fakes.twilio import FAULT_KINDS, FakeTwilio, Faults  # noqa: E402

from aftercare.models import MessageStatus  # noqa: E402
from conftest import midday_zone  # noqa: E402
from soak_kit import (  # noqa: E402
    ADOPTED,
    LOCK_TROUBLE,
    TWO_DUE_AGO,
    drain,
    exactly_once_problems,
    kill_at_random,
    soak_clinic,
    write_sessions,
)

TIMEOUT = 0.5  # sms.timeout_seconds
LEASE = 30  # daemon.lease_seconds, the smallest the config allows
RECOVERED = re.compile(r"interrupted sends: (\d+) adopted, (\d+) requeued, (\d+) failed")
SETTLE_SECONDS = 1800.0  # the last daemon's recovery runs every minute; faults keep interrupting sends


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="due SMS (two per patient)")
    parser.add_argument("--kills", type=int, default=20, help="daemons SIGKILLed")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="fraction of creates that fail")
    parser.add_argument("--most-seconds", type=float, default=5.0,
                        help="a killed daemon sends for a random time up to this, after its first claim")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    patients = args.messages // 2
    phases: dict[str, float] = {}
    began = mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name], mark = now - mark, now

    with tempfile.TemporaryDirectory() as tmp, FakeTwilio() as fake:
        folder = Path(tmp)
        fake.inject(Faults(rate=args.fault_rate, seed=args.seed, slow_seconds=3 * TIMEOUT))
        with soak_clinic(folder, f"sqlite:///{folder / 'soak.db'}", fake, timeout=TIMEOUT,
                         lease=LEASE) as clinic:
            started = datetime.now(UTC)
            day = write_sessions(folder / "day.csv", range(patients), started - TWO_DUE_AGO,
                                 timezone=midday_zone())
            clinic.cli("import", str(day))
            due = clinic.count(MessageStatus.PENDING, planned_by=started)
            phase("import")
            killed = kill_at_random(clinic, rng, args.kills, most_seconds=args.most_seconds,
                                    planned_by=started)
            sent_while_killing = clinic.count(MessageStatus.SENT)
            phase("kills")
            drain(clinic, "drain", planned_by=started)
            interrupted = clinic.count(MessageStatus.SENDING)
            phase("drain")

            def lease_passed() -> bool:
                newest = clinic.newest_claim()
                return newest is None or newest < datetime.now(UTC) - timedelta(seconds=LEASE + 1)

            clinic.wait_for(lease_passed, "the newest claim's lease to run out")
            phase("lease wait")
            last = clinic.start_daemon("last")
            clinic.wait_for(last.started, "the last daemon to start")

            def settled() -> bool:
                return clinic.count(MessageStatus.SENDING) == 0 and \
                    clinic.count(MessageStatus.PENDING, planned_by=started) == 0

            clinic.wait_for(settled, "recovery to settle every interrupted send", SETTLE_SECONDS)
            stopped = last.stop()
            phase("settle")
            rows = clinic.rows(due_by=started)
            output = clinic.all_output()
        wall = time.monotonic() - began

    problems = exactly_once_problems(rows, fake)
    if killed < args.kills:
        problems.append(f"only {killed} kills: the queue emptied first (lower --most-seconds)")
    if stopped != 0:
        problems.append(f"the last daemon exited with status {stopped}")
    if "Traceback" in output:
        problems.append("a process printed a traceback")
    if LOCK_TROUBLE.search(output):
        problems.append("lock trouble in a process's output")
    sent = sum(row.status == MessageStatus.SENT for row in rows)
    failed = [row for row in rows if row.status == MessageStatus.FAILED]
    adopted = sum(row.last_error == ADOPTED for row in rows)
    creates = sum(1 for r in fake.requests if r.method == "POST")
    recoveries = [tuple(map(int, found)) for found in RECOVERED.findall(output)]
    print(f"# Crash soak ({platform.python_version()}, {platform.machine()}, seed {args.seed})")
    print(f"messages due:            {len(rows)} (planned {due})")
    print(f"daemons SIGKILLed:       {killed}, sent meanwhile {sent_while_killing}")
    print(f"faults injected:         {sum(fake.fault_counts.values())} of {creates} creates "
          f"({args.fault_rate:.0%}): " + ", ".join(f"{k}={fake.fault_counts[k]}" for k in FAULT_KINDS))
    print(f"in sending after drain:  {interrupted} (interrupted by kills and faults)")
    totals = [sum(found[i] for found in recoveries) for i in range(3)]
    print(f"recovery (daemon logs):  {totals[0]} adopted, {totals[1]} requeued, {totals[2]} failed")
    print(f"sent:                    {sent} (adopted from Twilio after an interrupted send: {adopted})")
    print(f"failed:                  {len(failed)}" + "".join(
        f"\n  message {row.id}: {row.last_error}" for row in failed[:10]))
    print(f"accepted by the fake:    {len(fake.created)}, duplicates={len(fake.duplicates())}")
    print(f"wall time:               {wall:.1f} s (" + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in phases.items()) + ")")
    print(f"problems:                {len(problems)}" + "".join(f"\n  {p}" for p in problems[:20]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
