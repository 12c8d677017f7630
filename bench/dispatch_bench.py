"""Benchmark: claim cost as future pending rows grow; enrollment and dispatch throughput;
the cost of an idle pass (daemon and `send-due`) at 10k and 1M pending rows.

Run: python bench/dispatch_bench.py [--sizes 0,10000,100000,1000000] > numbers.md
Numbers go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from aftercare.app import App
from aftercare.config import DatabaseConfig, Settings
from aftercare.db import migrate
from aftercare.enrollment import SessionVisit, enroll
from aftercare.patients import NewPatient, add_patient

NOW = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)  # 10:00 in New York: outside quiet hours


def _app(folder: Path) -> App:
    settings = Settings(database=DatabaseConfig(url=f"sqlite:///{folder / 'bench.db'}"))
    app = App.from_settings(settings, clock=lambda: NOW, console=io.StringIO())
    migrate(app.engine)
    return app


_PATIENT = text("INSERT INTO patient (id, name, phone, email, timezone, locale, channels,"
                " created_at) VALUES (:id, 'Bench', '+12125550123', 'b@example.com',"
                " 'America/New_York', 'en', 'sms,email', :t)")


def _seed(app: App, future: int, due: int, *, patient_per_course: bool = False) -> None:
    """`future` pending rows in the coming year and `due` rows due now, in courses of six
    sessions, as a clinic's are (the send-time check reads the course): all of one patient,
    or each course its own patient's (`patient_per_course`: due messages of many patients,
    as a clinic's morning is)."""
    with app.engine.begin() as conn:
        stamp = NOW.replace(tzinfo=None)
        conn.execute(_PATIENT, {"id": 1, "t": stamp})
        rng = random.Random(1)
        courses: list[dict[str, object]] = []
        sessions: list[dict[str, object]] = []
        messages: list[dict[str, object]] = []
        for i in range(future + due):
            if i < due:
                send_after = stamp - timedelta(minutes=1)
                if patient_per_course:
                    # Each patient's first session's message falls due first, then each
                    # one's second...: the queue's order mixes patients, as a morning's does.
                    send_after -= timedelta(seconds=6 - i % 6)
            else:
                send_after = stamp + timedelta(minutes=rng.randint(1, 525_600))
            if i % 6 == 0:
                patient = i // 6 + 1 if patient_per_course else 1
                if patient > 1:
                    conn.execute(_PATIENT, {"id": patient, "t": stamp})
                courses.append({"id": i // 6 + 1, "patient": patient, "t": stamp})
            # One session per row keeps the (session, step, channel) key unique.
            sessions.append({"id": i + 1, "course": i // 6 + 1, "number": i % 6 + 1,
                             "at": stamp - timedelta(days=7 * (5 - i % 6), seconds=i), "t": stamp})
            messages.append({"sid": i + 1, "course": i // 6 + 1,
                             "patient": i // 6 + 1 if patient_per_course else 1, "sa": send_after,
                             "ex": send_after + timedelta(days=400), "t": stamp})
            if len(messages) == 50_000 or i == future + due - 1:
                conn.execute(text("INSERT INTO course (id, patient_id, treatment, area,"
                                  " sessions_planned, spacing_days, status, created_at)"
                                  " VALUES (:id, :patient, 'cellulite', '', 6, 7, 'active', :t)"),
                             courses)
                conn.execute(text("INSERT INTO session (id, course_id, number, number_fixed, at,"
                                  " moves, status, created_at)"
                                  " VALUES (:id, :course, :number, 0, :at, 0, 'completed', :t)"),
                             sessions)
                conn.execute(text(
                    "INSERT INTO message (patient_id, course_id, session_id, step, occurrence,"
                    " channel, status, planned_at, send_after, expires_at, attempts, created_at,"
                    " updated_at) VALUES (:patient, :course, :sid, 'first_48h', 0, 'sms', 'pending',"
                    " :sa, :sa, :ex, 0, :t, :t)"), messages)
                courses, sessions, messages = [], [], []


def bench_claim(sizes: list[int], repeats: int) -> list[tuple[int, float, float]]:
    """Median and p95 milliseconds to claim a batch of 50 due rows, per future-row count."""
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            app = _app(Path(folder))
            _seed(app, size, 50)
            dispatcher = app.dispatcher()
            timings = []
            for _ in range(repeats):
                start = time.perf_counter()
                claimed = dispatcher.claim(50)
                timings.append((time.perf_counter() - start) * 1000)
                assert len(claimed) == 50
                with app.engine.begin() as conn:
                    conn.execute(text("UPDATE message SET status = 'pending', claim_token = NULL,"
                                      " claimed_at = NULL WHERE status = 'sending'"))
            timings.sort()
            results.append((size, statistics.median(timings),
                            timings[int(len(timings) * 0.95) - 1]))
            app.engine.dispose()
    return results


def bench_idle(sizes: list[int], repeats: int) -> list[tuple[int, float, float, float]]:
    """Per future-row count: an idle daemon pass (recovery, then a dispatch pass that finds
    nothing due), median ms; and an idle `aftercare send-due` process, median and fastest
    seconds of wall time (start, config, setup check, schema check, recovery, pass)."""
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            app = _app(folder)
            _seed(app, size, 0)
            dispatcher = app.dispatcher()
            passes = []
            for _ in range(repeats):
                start = time.perf_counter()
                dispatcher.recover_stale()
                assert dispatcher.run_once().total == 0
                passes.append((time.perf_counter() - start) * 1000)
            app.engine.dispose()
            config = folder / "aftercare.toml"
            config.write_text(f'[database]\nurl = "sqlite:///{folder / "bench.db"}"\n',
                              encoding="utf-8")
            command = [str(Path(sys.executable).with_name("aftercare")), "--config", str(config),
                       "--now", NOW.isoformat(), "send-due"]
            runs = []
            for _ in range(7):
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                runs.append(time.perf_counter() - start)
                assert done.returncode == 0 and done.stdout.startswith("0 sent"), done
            results.append((size, statistics.median(passes), statistics.median(runs[1:]),
                            min(runs[1:])))
    return results


def bench_enroll(patients: int) -> float:
    """Patients enrolled per second (each plans 16 messages)."""
    with tempfile.TemporaryDirectory() as folder:
        app = _app(Path(folder))
        planner = app.planner()
        start = time.perf_counter()
        with app.db() as db:
            for i in range(patients):
                patient = add_patient(db, NewPatient(f"Patient {i}", phone="+12125550123",
                                                     email="p@example.com"), country="US",
                                      default_timezone="America/New_York", default_locale="en",
                                      locales=("en",), clock=app.clock)
                enroll(db, planner, patient,
                       SessionVisit("cellulite", NOW - timedelta(minutes=30),
                                    next_session_at=NOW + timedelta(days=14)))
        elapsed = time.perf_counter() - start
        app.engine.dispose()
        return patients / elapsed


def bench_dispatch(messages: int, *, one_patient: bool = False) -> tuple[float, float]:
    """Messages rendered, sent on the console channel and recorded, per second of wall
    time and per second of the process's CPU time (a loaded machine inflates the first):
    due for one patient per course (a clinic's morning), or all for one patient
    (`one_patient`: every message is judged alone, as no two of one patient share a
    transaction)."""
    with tempfile.TemporaryDirectory() as folder:
        app = _app(Path(folder))
        _seed(app, 0, messages, patient_per_course=not one_patient)
        start, cpu = time.perf_counter(), time.process_time()
        counts = app.dispatcher().run_once()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert counts.sent == messages, counts
        app.engine.dispose()
        return messages / elapsed, messages / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--idle-sizes", default="10000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Python {platform.python_version()}, SQLite file in a temp folder, "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d')}\n")
    print("| future pending rows | claim 50 due rows, median ms | p95 ms |")
    print("|---:|---:|---:|")
    for size, median, p95 in bench_claim(sizes, args.repeats):
        print(f"| {size:,} | {median:.2f} | {p95:.2f} |")
    print(f"\nEnrollment: {bench_enroll(args.patients):.0f} patients/s "
          f"({args.patients} patients, 16 messages each)")
    wall, cpu = bench_dispatch(args.messages)
    print(f"Dispatch: {wall:.0f} messages/s on the console channel ({cpu:.0f} per CPU-second; "
          f"{args.messages} due messages of {args.messages // 6} patients, rendered, sent and "
          "recorded)")
    wall, cpu = bench_dispatch(args.messages, one_patient=True)
    print(f"Dispatch, every message of one patient: {wall:.0f} messages/s "
          f"({cpu:.0f} per CPU-second)")
    print("\n| future pending rows | idle daemon pass, median ms | idle `send-due`, median s "
          "| fastest s |")
    print("|---:|---:|---:|---:|")
    for size, daemon_ms, median_s, fastest_s in bench_idle(
            [int(s) for s in args.idle_sizes.split(",")], args.repeats):
        print(f"| {size:,} | {daemon_ms:.2f} | {median_s:.2f} | {fastest_s:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak RSS of the benchmark process: {peak:.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
