"""Benchmark: the SMS rate reached through the real twilio client, against a fake Twilio
that answers every request in 200 ms.

One Dispatcher (as one daemon) on a temporary SQLite database sends due SMS through
aftercare's TwilioSms channel (the real twilio client, the pace shared through the
database), at `sms.rate_per_second` = 10, 60 and 100 segments a second, with
`sms.concurrency` = 1.5 x rate x latency (docs/delivery.md, "Pace and concurrency").

Two views of the same run: the slots the shared pace gave out (when each send was
allowed to start), and the requests as the fake Twilio saw them arrive (in a process of
its own). Segments are counted as Twilio meters them, one every 1 / rate seconds: a
2-segment SMS that starts at t uses the slots t and t + 1 / rate.

Run: python bench/rate_bench.py [--rates 10,60,100] [--seconds 20] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session as DbSession

from aftercare.app import App
from aftercare.channels.rate_limit import SharedPace, wall_clock
from aftercare.config import DatabaseConfig, Settings, SmsConfig
from aftercare.db import migrate

TESTS = Path(__file__).resolve().parents[1] / "tests"  # where the fake Twilio lives

NOW = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)  # 10:00 in New York: outside quiet hours
SEGMENTS_PER_SMS = 2  # first_48h with the opt-out line: 2 GSM-7 segments
RAMP_SECONDS = 1.0  # left out at each end of the run: the steady window is what remains


@dataclass
class View:
    """One view of a run: segments a second over the steady window, and the most
    segments in any 1-second window."""

    steady: float
    peak: int

    @classmethod
    def of(cls, starts: list[tuple[float, int]], rate: float) -> View:
        """From (start time in seconds, segments) of every send."""
        # In whole microseconds, the resolution of the pace's times: float seconds since
        # 1970 would round a slot exactly one second later into the window.
        sends = sorted((round(at * 1_000_000), cost) for at, cost in starts)
        first, last = sends[0][0] + RAMP_SECONDS * 1e6, sends[-1][0] - RAMP_SECONDS * 1e6
        steady = [(at, cost) for at, cost in sends if first <= at <= last]
        # The segments of the sends in between, over the time between the first and last.
        per_second = (sum(cost for _, cost in steady[:-1]) * 1e6
                      / (steady[-1][0] - steady[0][0]))
        slots = sorted(at + round(index * 1e6 / rate) for at, cost in sends
                       for index in range(cost))
        peak, low = 0, 0
        for high, at in enumerate(slots):  # every window (t - 1 s, t] that ends at a slot
            while slots[low] <= at - 1_000_000:
                low += 1
            peak = max(peak, high - low + 1)
        return cls(per_second, peak)


class _RecordingPace(SharedPace):
    """The shared pace, noting each slot it gives out (wall clock, seconds)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._read = threading.local()
        super().__init__(*args, clock=self._now, **kwargs)  # type: ignore[arg-type]
        self.slots: list[tuple[float, int]] = []

    def _now(self) -> datetime:
        self._read.now = wall_clock()
        return self._read.now

    def _take(self, db: DbSession, cost: float) -> float:
        seconds = super()._take(db, cost)
        # The slot starts `seconds` after the clock reading `_take` judged it on.
        self.slots.append((self._read.now.timestamp() + seconds, int(cost)))
        return seconds


def _seed(app: App, count: int) -> None:
    """`count` SMS due now (first_48h), each of its own patient, course and session."""
    stamp = NOW.replace(tzinfo=None)
    rows = [{"id": i + 1, "t": stamp, "at": stamp - timedelta(hours=1),
             "due": stamp - timedelta(minutes=1), "ex": stamp + timedelta(hours=15)}
            for i in range(count)]
    with app.engine.begin() as conn:
        conn.execute(text("INSERT INTO patient (id, name, phone, timezone, locale, channels,"
                          " created_at) VALUES (:id, 'Bench Patient', '+12125550123',"
                          " 'America/New_York', 'en', 'sms', :t)"), rows)
        conn.execute(text("INSERT INTO course (id, patient_id, treatment, area,"
                          " sessions_planned, spacing_days, status, created_at)"
                          " VALUES (:id, :id, 'cellulite', '', 6, 7, 'active', :t)"), rows)
        conn.execute(text("INSERT INTO session (id, course_id, number, number_fixed, at,"
                          " moves, status, created_at)"
                          " VALUES (:id, :id, 1, 0, :at, 0, 'completed', :t)"), rows)
        conn.execute(text(
            "INSERT INTO message (patient_id, course_id, session_id, step, occurrence, channel,"
            " status, planned_at, send_after, expires_at, attempts, created_at, updated_at)"
            " VALUES (:id, :id, :id, 'first_48h', 0, 'sms', 'pending', :due, :due, :ex, 0,"
            " :t, :t)"), rows)


# The fake Twilio runs in a process of its own, as Twilio runs on machines of its own: it
# stamps each create as it arrives (CLOCK_MONOTONIC is the same for every process), and its
# handler threads never wait for the sender's interpreter lock to do so.
_FAKE = """\
import json, sys, time
sys.path.insert(0, sys.argv[1])
from fakes.twilio import FakeTwilio, segments, slow
arrivals = []
with FakeTwilio() as fake:
    record = fake._record
    def stamped(recorded):
        if recorded.method == "POST":
            arrivals.append((time.monotonic(), segments(recorded.form.get("Body", ""))))
        record(recorded)
    fake._record = stamped
    fake.script(*[slow(float(sys.argv[3]))] * int(sys.argv[2]))
    print(json.dumps({"url": fake.url, "sid": fake.account_sid, "token": fake.auth_token}),
          flush=True)
    sys.stdin.readline()
    print(json.dumps({"arrivals": arrivals, "created": len(fake.created),
                      "problems": fake.problems}), flush=True)
"""


def bench_rate(rate: float, seconds: float, latency: float) -> tuple[int, int, View, View]:
    """Send `seconds` worth of SMS at `rate` segments a second: the concurrency, the SMS
    sent, and the run as the pace scheduled it and as the fake saw it."""
    concurrency = max(2, math.ceil(1.5 * rate * latency))
    count = math.ceil(rate * seconds / SEGMENTS_PER_SMS)
    fake = subprocess.Popen([sys.executable, "-c", _FAKE, str(TESTS), str(count), str(latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert fake.stdin is not None and fake.stdout is not None
    try:
        where = json.loads(fake.stdout.readline())
        os.environ.update(TWILIO_ACCOUNT_SID=where["sid"], TWILIO_AUTH_TOKEN=where["token"])
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(
                database=DatabaseConfig(url=f"sqlite:///{Path(folder) / 'bench.db'}"),
                sms=SmsConfig(provider="twilio", from_="+12125550100",
                              api_base_url=where["url"], timeout_seconds=5,
                              rate_per_second=rate, concurrency=concurrency))
            app = App.from_settings(settings, clock=lambda: NOW, console=io.StringIO())
            migrate(app.engine)
            _seed(app, count)
            pace = _RecordingPace(app.engine, "sms", rate)
            app.channels["sms"].pace = pace
            dispatcher = app.dispatcher()
            counts = dispatcher.run_once()
            dispatcher.close()
            app.engine.dispose()
        fake.stdin.write("done\n")
        fake.stdin.flush()
        seen = json.loads(fake.stdout.readline())
    finally:
        fake.stdin.close()
        fake.wait(10)
    assert counts.sent == count == seen["created"], (counts, seen["created"])
    assert seen["problems"] == [], seen["problems"]
    # The fake's times are CLOCK_MONOTONIC, the pace's the wall clock: each view on its own.
    return (concurrency, count, View.of(pace.slots, rate),
            View.of([(at, cost) for at, cost in seen["arrivals"]], rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="10,60,100")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"Python {platform.python_version()}, SQLite file in a temp folder, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}, "
          f"{time.strftime('%Y-%m-%d')}; fake Twilio answering in {args.latency * 1000:.0f} ms; "
          f"{SEGMENTS_PER_SMS}-segment SMS; {args.seconds:g} s a rate\n")
    print("| rate_per_second | concurrency | SMS | scheduled: segments/s | max in any 1 s | "
          "at the fake: segments/s | max in any 1 s | within 5% | never above |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        concurrency, count, scheduled, seen = bench_rate(rate, args.seconds, args.latency)
        within = abs(seen.steady - rate) <= 0.05 * rate
        never_above = scheduled.peak <= rate and scheduled.steady <= rate
        print(f"| {rate:g} | {concurrency} | {count} | {scheduled.steady:.2f} | "
              f"{scheduled.peak} | {seen.steady:.2f} | {seen.peak} | "
              f"{'yes' if within else 'NO'} | {'yes' if never_above else 'NO'} |")
        sys.stdout.flush()
    print("\nwithin 5%: the steady rate at the fake; never above: as the pace scheduled the "
          "sends (at the fake, requests also arrive late by the sender's thread scheduling "
          "and the network, which can bunch a few into one second).")


if __name__ == "__main__":
    main()
