"""Benchmark: how long each console page takes to render on a clinic-sized database.

Builds a SQLite file with 10,000 patients and 200,000 messages spread over 60 days (a
realistic mix of statuses), a few hundred replies (some urgent) and the day's sessions,
then renders each page through Starlette's test client signed in as an admin and prints
the median of several renders.

Run: python bench/console_bench.py [--patients 10000] [--messages 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from starlette.testclient import TestClient

from aftercare.app import App
from aftercare.config import DatabaseConfig, Settings
from aftercare.db import migrate
from aftercare.models import Course, Event, Message, Notice, Patient, Reply, Session
from aftercare.staff import add_user
from aftercare.web import create_app

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Tuesday
DAYS_BACK, DAYS_AHEAD = 45, 15  # messages spread over 60 days around now
ADMIN, PASSWORD = "admin@bench.example", "quiet orbit pebble 19"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
BUDGET_MS = 300.0  # a page slower than this needs its query looked at

FIRST = ["Ana", "Ben", "Chloe", "David", "Emma", "Farah", "Gabriel", "Hana", "Ines", "Jules",
         "Karim", "Lea", "Marc", "Nora", "Omar", "Paula", "Quentin", "Rosa", "Sami", "Tess"]
LAST = ["Smith", "Martin", "Bernard", "Dubois", "Garcia", "Nguyen", "Rossi", "Silva", "Kim",
        "Cohen", "Moreau", "Laurent", "Lopez", "Khan", "Novak", "Petit", "Roux", "Weber"]
STEPS = ["first_48h", "arnica", "activity", "check_48h", "routine", "next_session",
         "session_reminder", "rebook", "rebook_follow_up", "results", "maintenance"]
ERRORS = {"failed": ["21211: HTTP 400: The 'To' number is not a valid phone number",
                     "21610: HTTP 400: Attempt to send to unsubscribed recipient",
                     "550: SMTP 550: recipient refused", "network: ConnectionError"],
          "undelivered": ["30005: Twilio undelivered", "30003: Twilio undelivered",
                          "30007: Twilio undelivered: carrier filtering"]}
REPLIES = {"urgent": ["I have a fever and the area is hot", "my lips are swollen",
                      "severe pain in my thigh since last night"],
           "review": ["the bruise is still there", "small lumps under the skin"],
           "routine": ["Thanks, see you next week", "Can I move my appointment?", "Ok"]}


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _past_status(rng: random.Random) -> str:
    roll = rng.random()
    for status, share in (("delivered", 0.70), ("sent", 0.10), ("cancelled", 0.10),
                          ("expired", 0.04), ("failed", 0.03)):
        if roll < share:
            return status
        roll -= share
    return "undelivered"


def build(folder: Path, patients: int, messages: int, replies: int, seed: int = 1) -> App:
    """A migrated database filled in bulk (executemany), and the app on it."""
    settings = Settings(database=DatabaseConfig(url=f"sqlite:///{folder / 'console.db'}"))
    app = App.from_settings(settings, clock=lambda: NOW, console=io.StringIO())
    migrate(app.engine)
    rng = random.Random(seed)
    treatments = [p.key for p in app.protocols]
    per_patient = max(1, messages // patients)
    rows: dict[str, list[dict[str, Any]]] = {"patient": [], "course": [], "session": [],
                                             "message": [], "event": []}
    today_start = NOW.replace(hour=5, minute=0)  # midnight in New York (EST)
    for pid in range(1, patients + 1):
        created = NOW - timedelta(days=rng.randint(DAYS_BACK, 400))
        rows["patient"].append({
            "id": pid, "ref": f"R{pid:05d}", "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "phone": f"+1212{pid:07d}", "email": f"patient{pid}@example.com",
            "timezone": "America/New_York", "locale": rng.choice(["en", "en", "fr"]),
            "channels": "sms,email", "created_at": created})
        done = NOW - timedelta(days=rng.randint(1, DAYS_BACK), minutes=rng.randint(0, 600))
        rows["course"].append({"id": pid, "patient_id": pid, "treatment": rng.choice(treatments),
                               "area": "thighs", "sessions_planned": 6, "spacing_days": 14,
                               "status": "active", "created_at": done})
        # A completed session, and the next one booked: about 1 in 100 of them today.
        if pid % 100 == 0:
            booked = today_start + timedelta(hours=9 + pid % 9, minutes=30)
        else:
            booked = NOW + timedelta(days=rng.randint(1, DAYS_AHEAD), hours=rng.randint(0, 8))
        checkin = rng.choice([None, "bruising: gone", "bruising: still_there"])
        for number, at, status in ((1, done, "completed"), (2, booked, "booked")):
            rows["session"].append({
                "id": 2 * pid - 2 + number, "course_id": pid, "number": number,
                "number_fixed": False, "at": at, "moves": 0, "status": status,
                "checkin": checkin if number == 2 else None,
                "checkin_at": NOW if number == 2 and checkin else None,
                "flag": "bruising not gone: call the patient to move this session"
                if number == 2 and checkin == "bruising: still_there" else None,
                "created_at": done})
        for n in range(per_patient):
            due = NOW + timedelta(minutes=rng.randint(-DAYS_BACK * 1440, DAYS_AHEAD * 1440))
            status = _past_status(rng) if due < NOW else rng.choice(["pending"] * 19 + ["cancelled"])
            sent = due + timedelta(seconds=rng.randint(1, 90)) \
                if status in ("delivered", "sent", "undelivered") else None
            error = rng.choice(ERRORS[status]) if status in ERRORS else \
                ("patient withdrew" if status == "cancelled" else None)
            rows["message"].append({
                "patient_id": pid, "course_id": pid, "session_id": 2 * pid - 1,
                "step": STEPS[n % len(STEPS)], "occurrence": n, "channel": rng.choice(["sms", "email"]),
                "status": status, "planned_at": due, "send_after": due,
                "expires_at": due + timedelta(days=2), "attempts": 1 if sent else 0,
                "sent_at": sent, "delivered_at": sent if status == "delivered" else None,
                "provider_id": f"SM{pid:06d}{n:04d}" if sent else None, "body": None,
                "last_error": error, "created_at": done, "updated_at": due})
        for kind in ("patient.added", "course.enrolled", "session.booked"):
            rows["event"].append({"at": done, "patient_id": pid, "course_id": pid, "kind": kind,
                                  "detail": "", "actor": "cli"})
    with app.engine.begin() as conn:
        for name, model in (("patient", Patient), ("course", Course), ("session", Session),
                            ("message", Message), ("event", Event)):
            for start in range(0, len(rows[name]), 20_000):
                conn.execute(_table(model).insert(), rows[name][start:start + 20_000])
        reply_rows, notice_rows = [], []
        for rid in range(1, replies + 1):
            level = "urgent" if rid % 25 == 0 else "review" if rid % 8 == 0 else "routine"
            sender: int | None = rng.randint(1, patients) if rid % 30 else None  # or unknown
            received = NOW - timedelta(minutes=rng.randint(5, DAYS_BACK * 1440))
            closed = rid <= replies * 3 // 4  # most replies were dealt with long ago
            reply_rows.append({
                "id": rid, "provider_id": f"SMreply{rid:06d}", "patient_id": sender,
                "from_number": f"+1212{sender:07d}" if sender else f"+1646555{rid:04d}",
                "to_number": "+12125550100", "body": rng.choice(REPLIES[level]),
                "received_at": received, "triage": level,
                "status": "closed" if closed else rng.choice(["open", "open", "acknowledged"]),
                "handled_at": received, "closed_at": received + timedelta(hours=2) if closed else None,
                "acknowledged_at": received + timedelta(hours=1) if closed else None})
            if level == "urgent":
                notice_rows.append({"kind": "alert", "reply_id": rid, "patient_id": sender,
                                    "channel": "sms", "to_address": "+12125550177",
                                    "body": "URGENT reply", "status": "sent", "attempts": 1,
                                    "send_after": received, "sent_at": received,
                                    "created_at": received})
        conn.execute(_table(Reply).insert(), reply_rows)
        conn.execute(_table(Notice).insert(), notice_rows)
    with app.db() as db:
        add_user(db, ADMIN, "Ada Min", "admin", PASSWORD, NOW)
    return app


@contextmanager
def signed_in(app: App) -> Iterator[TestClient]:
    """A test client of the console signed in as the admin."""
    with TestClient(create_app(app), base_url="http://testserver",
                    follow_redirects=False) as client:
        token = CSRF.search(client.get("/login").text)
        assert token, "no CSRF token on the login page"
        answer = client.post("/login", data={"csrf": token.group(1), "email": ADMIN,
                                             "password": PASSWORD, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield client


@dataclass
class Timing:
    path: str
    status: int
    median_ms: float
    worst_ms: float
    size_kb: float


def time_pages(client: TestClient, paths: list[str], repeats: int) -> list[Timing]:
    """Each page rendered once to warm up, then `repeats` times: median and worst."""
    found = []
    for path in paths:
        answer = client.get(path)
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            answer = client.get(path)
            timings.append((time.perf_counter() - start) * 1000)
        found.append(Timing(path, answer.status_code, statistics.median(timings), max(timings),
                            len(answer.content) / 1024))
    return found


def pages(patient_id: int) -> list[str]:
    today = NOW.date().isoformat()
    return ["/", "/inbox", "/inbox?closed=1", "/inbox?closed=1&page=4",
            "/messages", "/messages?page=200",
            "/messages?status=pending&sort=due", "/messages?status=failed",
            f"/messages?day={today}", f"/messages?day={today}&page=3",
            f"/messages?day={today}&status=delivered&channel=sms",
            "/messages?channel=email&step=arnica", "/messages?channel=email&step=arnica&page=20",
            "/messages?sort=due", "/messages?sort=due&page=100",
            "/patients", "/patients?q=smith", "/patients?q=2125550", "/patients?page=50",
            f"/patients/{patient_id}", "/protocols"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--replies", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        app = build(Path(folder), args.patients, args.messages, args.replies)
        built = time.perf_counter() - start
        print(f"Python {platform.python_version()}, SQLite file in a temp folder, "
              f"{platform.machine()}, {time.strftime('%Y-%m-%d')}; {args.patients:,} patients, "
              f"{args.messages:,} messages, {args.replies} replies, built in {built:.1f} s; "
              f"median of {args.repeats} renders\n")
        print("| page | status | median ms | worst ms | KiB |")
        print("|---|---:|---:|---:|---:|")
        slow = []
        with signed_in(app) as client:
            for t in time_pages(client, pages(args.patients // 2), args.repeats):
                mark = " **slow**" if t.median_ms > BUDGET_MS else ""
                print(f"| `{t.path}` | {t.status} | {t.median_ms:.1f}{mark} | {t.worst_ms:.1f} "
                      f"| {t.size_kb:.0f} |")
                if t.median_ms > BUDGET_MS:
                    slow.append(t.path)
        app.engine.dispose()
    if slow:
        print(f"\nOver {BUDGET_MS:.0f} ms: {', '.join(slow)}")
    sys.stdout.flush()
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
