"""Benchmark: the naive design (one APScheduler job per reminder) against aftercare.

Run: python bench/naive_scheduler.py [--reminders 100000] > numbers.md
Numbers go in docs/performance.md ("The naive design").

Both sides get the very same reminders: aftercare imports a CSV of completed sessions
(`import`), and the naive side schedules one APScheduler 3.11 `date` job per message row
aftercare planned, in a SQLAlchemyJobStore on SQLite, at the same times. Then each
service is down for a day and restarts:

- naive: a new scheduler starts on the job store a day later. With APScheduler's default
  `misfire_grace_time` (1 s) every reminder due during the outage is dropped (a "missed"
  event, then the job is deleted); with `misfire_grace_time=None` they all run at once,
  however late, at night too.
- aftercare: one dispatch pass a day later (console channel). Each reminder due meanwhile
  is sent if still within its validity window and outside quiet hours, held until morning
  if inside them, or recorded as expired with its reason. None vanishes.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler import __version__ as apscheduler_version
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

sys.path.insert(0, str(Path(__file__).parent))
from import_bench import NOW, _app, write_csv  # bench/ is not a package

from aftercare.app import App
from aftercare.csv_import import import_csv

OUTAGE = timedelta(days=1)
delivered: Counter[int] = Counter()


def deliver(message_id: int) -> None:
    """The naive job: 'send' one reminder (counted, not sent)."""
    delivered[message_id] += 1


@dataclass
class Ours:
    """What aftercare did with the same reminders."""

    messages: int
    seconds: float
    after: dict[str, int]  # the first pass after the outage, by outcome
    reasons: Counter[str]  # why the expired ones expired


def aftercare_side(folder: Path, sessions: int) -> tuple[Ours, list[tuple[int, datetime]]]:
    """Import the sessions, run the pass before the outage and the one after it."""
    path = folder / "sessions.csv"
    write_csv(path, sessions)
    app = _app(folder / "aftercare.db")
    started = time.perf_counter()
    report = import_csv(app, path)
    scheduling = time.perf_counter() - started
    assert not report.problems, report.summary()
    with sqlite3.connect(folder / "aftercare.db") as conn:
        rows = [(i, datetime.fromisoformat(at).replace(tzinfo=UTC)) for i, at in conn.execute(
            "SELECT id, send_after FROM message WHERE status = 'pending' ORDER BY id")]
    _pass(app, NOW)  # the daemon was running until the outage began
    after = _pass(app, NOW + OUTAGE)  # the first pass after the restart
    with sqlite3.connect(folder / "aftercare.db") as conn:
        reasons = Counter(r for (r,) in conn.execute(
            "SELECT last_error FROM message WHERE status = 'expired'"))
    return Ours(len(rows), scheduling, after, reasons), rows


def _pass(app: App, moment: datetime) -> dict[str, int]:
    app.clock = lambda: moment
    return app.dispatcher().run_once().as_dict()


def naive_side(folder: Path, reminders: list[tuple[int, datetime]],
               grace: int | None) -> dict[str, float]:
    """Schedule one job per reminder, shift time so the outage just ended, restart."""
    url = f"sqlite:///{folder / f'jobs-{grace}.db'}"
    real_now = datetime.now(UTC)
    # A reminder due at `at` (aftercare's time) runs at `at - restart + real_now`: those due
    # during the outage are between 0 and 24 hours late when the new scheduler starts.
    shift = real_now - (NOW + OUTAGE)
    # Reminders due in the two hours after the outage are left out: adding the jobs takes
    # minutes, and the comparison is about what the outage did to the ones due during it.
    due = [(i, at + shift) for i, at in reminders
           if at > NOW and not NOW + OUTAGE < at <= NOW + OUTAGE + timedelta(hours=2)]
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)},
                                    timezone="UTC")
    scheduler.start(paused=True)  # the service before the outage, adding jobs as it enrolls
    started = time.perf_counter()
    for message_id, at in due:
        scheduler.add_job(deliver, "date", run_date=at, args=[message_id],
                          id=str(message_id), misfire_grace_time=grace)
    scheduling = time.perf_counter() - started
    scheduler.shutdown()  # the outage (jobs are added paused: none ran before it)

    delivered.clear()
    missed: set[int] = set()
    settled = threading.Event()
    # Adding the jobs took a while: the outage ends now, a day and that while long.
    late = {i for i, at in due if at <= datetime.now(UTC)}

    def listen(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            missed.add(int(event.job_id))
        if len(missed & late) + len(delivered.keys() & late) >= len(late):
            settled.set()

    restarted = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)},
                                    timezone="UTC")
    restarted.add_listener(listen, EVENT_JOB_MISSED | EVENT_JOB_EXECUTED)
    started_at = time.perf_counter()
    restarted.start()
    settled.wait(timeout=600)
    catch_up = time.perf_counter() - started_at
    restarted.pause()  # the jobs now coming due on time are not this benchmark's
    remaining = len(restarted.get_jobs())
    restarted.shutdown(wait=True)
    return {"jobs": len(due), "seconds": scheduling, "late": len(late),
            "ran": len(delivered.keys() & late), "missed": len(missed & late),
            "remaining": remaining, "catch_up": catch_up}


def main() -> None:
    # APScheduler logs one warning per missed job; the counts below say it once.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reminders", type=int, default=100_000,
                        help="about how many reminders (message rows) to plan")
    args = parser.parse_args()
    # The import bench's sessions plan about 5.1 message rows each.
    sessions = max(1, round(args.reminders / 5.12))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, reminders = aftercare_side(folder, sessions)
        naive = {grace: naive_side(folder, reminders, grace) for grace in (1, None)}
    print(f"Python {platform.python_version()}, APScheduler {apscheduler_version}, "
          f"SQLite {sqlite3.sqlite_version}; {sessions:,} sessions, "
          f"{ours.messages:,} reminders; outage {OUTAGE}\n")
    print("| | reminders scheduled | seconds | per second |")
    print("|---|---:|---:|---:|")
    print(f"| aftercare `import` (plans and stores every row) | {ours.messages:,} | "
          f"{ours.seconds:.1f} | {ours.messages / ours.seconds:,.0f} |")
    for grace, side in naive.items():
        print(f"| naive: one APScheduler job each (grace {grace}) | {side['jobs']:,} | "
              f"{side['seconds']:.1f} | {side['jobs'] / side['seconds']:,.0f} |")
    print("\nAfter a day of downtime:\n")
    print("| | due during the outage | sent / ran | held to morning | expired (reason kept) "
          "| dropped silently |")
    print("|---|---:|---:|---:|---:|---:|")
    after = ours.after
    print(f"| aftercare (first pass after the restart) | {sum(after.values()):,} | "
          f"{after['sent']:,} | {after['deferred']:,} | {after['expired']:,} | 0 |")
    for grace, side in naive.items():
        burst = f" (all within {side['catch_up']:.1f} s)" if side["ran"] else ""
        print(f"| naive, misfire_grace_time={grace} | {side['late']:,} | {side['ran']:,}{burst} "
              f"| 0 | 0 | {side['missed']:,} |")
    print(f"\naftercare's expiries: {dict(ours.reasons)}; cancelled by a later visit: "
          f"{after['cancelled']:,}")
    print(f"Naive job store afterwards: {naive[1]['remaining']:,} jobs left (grace 1), "
          f"{naive[None]['remaining']:,} (grace None).")


if __name__ == "__main__":
    main()
