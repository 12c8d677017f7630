"""Benchmark: `aftercare import` of a 10,000-row CSV against SQLite's own executemany.

Run: python bench/import_bench.py [--rows 10000] [--chunk 500] > numbers.md
Numbers go in docs/performance.md ("Bulk import").

Generates a day-after-day export (completed sessions of the past week, a third of the
patients seen twice, most with their next session booked), imports it into a fresh SQLite
file (all or nothing, then again: nothing changes), and copies the very rows the import
wrote into another fresh file with raw `sqlite3` `executemany`, one transaction, as the
floor no import can beat.
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import random
import resource
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aftercare import csv_import
from aftercare.app import App
from aftercare.config import DatabaseConfig, Settings
from aftercare.csv_import import COLUMNS, import_csv
from aftercare.db import migrate

NOW = datetime(2026, 11, 10, 23, 0, tzinfo=UTC)  # 18:00 in New York: the end of the day
TREATMENTS = ("cellulite", "fat-dissolving", "hair-loss", "bio-revitalization",
              "hyaluronic-acid", "mesobotox")
TABLES = ("patient", "course", "session", "message", "event")


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    """`rows` completed sessions: of the past week, and a third of the patients also two
    weeks before (that row booked the second visit)."""
    rng = random.Random(seed)
    lines: list[list[str]] = []
    patient = 0
    while len(lines) < rows:
        patient += 1
        twice = patient % 3 == 0 and len(lines) + 2 <= rows
        first = NOW - timedelta(days=20 if twice else rng.randint(0, 6),
                                hours=rng.randint(1, 8), minutes=rng.choice((0, 15, 30, 45)))
        treatment = TREATMENTS[patient % len(TREATMENTS)]
        phone = f"+1212{5550000 + patient:07d}"[:12]
        email = f"patient{patient}@example.com"
        channels = ("sms,email", "sms", "email")[patient % 3]
        # Seen twice: the first row books the second visit, which then took place.
        visits = [first, first + timedelta(days=14)] if twice else [first]
        for i, at in enumerate(visits):
            booked = visits[1] if twice and i == 0 else \
                at + timedelta(days=14) if rng.random() < 0.6 else None
            lines.append([f"B-{patient:06d}", f"Patient {patient} Bench", phone, email, "", "",
                          channels, treatment, "thighs", at.isoformat(), "",
                          booked.isoformat() if booked else ""])
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(lines[:rows])


def _app(db: Path) -> App:
    settings = Settings(database=DatabaseConfig(url=f"sqlite:///{db}"))
    app = App.from_settings(settings, clock=lambda: NOW, console=io.StringIO())
    migrate(app.engine)
    return app


def raw_copy(source: Path, target: Path) -> tuple[float, float, int]:
    """Seconds (wall, CPU) to insert every row the import wrote into an empty schema with
    executemany, and the message rows."""
    migrate(_app(target).engine)
    with sqlite3.connect(source) as src:
        data = {t: src.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}
        columns = {t: [c[1] for c in src.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    started, cpu = time.perf_counter(), time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    for table in TABLES:
        names = columns[table]
        conn.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                         f"({', '.join('?' * len(names))})", data[table])
    conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return seconds, cpu, len(data["message"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=getattr(csv_import, "CHUNK_ROWS", 500),
                        help="rows planned and written per chunk")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="import with --skip-invalid (a transaction per chunk)")
    args = parser.parse_args()
    csv_import.CHUNK_ROWS = args.chunk
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "day.csv"
        write_csv(path, args.rows)
        app = _app(folder / "import.db")
        ticks: list[int] = []
        started, cpu = time.perf_counter(), time.process_time()
        report = import_csv(app, path, skip_invalid=args.skip_invalid,
                            on_row=lambda done, total: ticks.append(done))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.imported == args.rows and not report.problems, report.summary()
        started, again_cpu = time.perf_counter(), time.process_time()
        again = import_csv(app, path, skip_invalid=args.skip_invalid)
        again_seconds = time.perf_counter() - started
        again_cpu = time.process_time() - again_cpu
        assert again.unchanged == args.rows and again.messages_planned == 0, again.summary()
        app.engine.dispose()
        raw_seconds, raw_cpu, messages = raw_copy(folder / "import.db", folder / "raw.db")
    assert messages == report.messages_planned
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"{args.rows} rows, chunk {args.chunk}"
          f"{', --skip-invalid' if args.skip_invalid else ''}\n")
    print("| | wall s | CPU s | sessions/s | message rows/s |")
    print("|---|---:|---:|---:|---:|")
    for label, wall, used, rows in (
            ("`import` (check, plan, write)", seconds, cpu, messages),
            ("`import` again (nothing changes)", again_seconds, again_cpu, 0),
            ("raw `executemany` of the same rows", raw_seconds, raw_cpu, messages)):
        per_second = f"{rows / wall:,.0f}" if rows else "-"
        print(f"| {label} | {wall:.2f} | {used:.2f} | {args.rows / wall:,.0f} | "
              f"{per_second} |")
    print(f"\n{report.summary()}")
    print(f"Progress callbacks: {len(ticks)}; peak RSS {rss:.0f} MiB.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
