"""Several sends in flight at once, at a pace shared by every sender on the database.

Channels with `concurrency` above 1 send through worker threads of the dispatch pass; a
paced channel takes each send's slot from the database (table sendpace), so two daemons
on one database keep one rate between them. Time is injected: the pace's wall clock and
sleep, and the app's clock for claims and leases.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fakes.twilio import FakeTwilio, slow

from aftercare.app import App
from aftercare.channels import Channel, Outgoing
from aftercare.channels.rate_limit import SharedPace
from aftercare.config import Settings, load_settings
from aftercare.errors import UserError
from aftercare.segments import measure
from conftest import SQLITE_TIME, Clinic, FixedClock, twilio_config, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

SESSION = utc("2026-03-02T10:30-05:00")
DUE = SESSION + timedelta(hours=1)  # first_48h is due
WALL = utc("2026-03-02T16:00+00:00")  # where the pace's injected wall clock starts
WAIT = 20  # seconds a test thread may take before the test gives up (never reached when green)


def _due(clinic: Clinic, count: int, channels: str = "sms") -> None:
    """`count` patients, each with one completed session and first_48h due on `channels`
    (their own phone number and address each)."""
    stamp, due, expires = (f"'{at:{SQLITE_TIME}}'" for at in (
        SESSION, DUE, DUE + timedelta(hours=15)))
    for i in range(1, count + 1):
        clinic.rows("INSERT INTO patient (id, name, phone, email, timezone, locale, channels,"
                    f" created_at) VALUES ({i}, 'Patient {i}', '+1212555{i:04d}',"
                    f" 'p{i}@example.com', 'America/New_York', 'en', '{channels}', {stamp})")
        clinic.rows("INSERT INTO course (id, patient_id, treatment, area, sessions_planned,"
                    f" spacing_days, status, created_at) VALUES ({i}, {i}, 'cellulite', '', 6,"
                    f" 7, 'active', {stamp})")
        clinic.rows("INSERT INTO session (id, course_id, number, number_fixed, at, moves,"
                    f" status, created_at) VALUES ({i}, {i}, 1, FALSE, {stamp}, 0, 'completed',"
                    f" {stamp})")
        for channel in channels.split(","):
            clinic.rows("INSERT INTO message (patient_id, course_id, session_id, step,"
                        " occurrence, channel, status, planned_at, send_after, expires_at,"
                        f" attempts, created_at, updated_at) VALUES ({i}, {i}, {i}, 'first_48h',"
                        f" 0, '{channel}', 'pending', {due}, {due}, {expires}, 0, {stamp},"
                        f" {stamp})")
    if clinic.backend == "postgresql":  # ids given by hand: move the sequences past them
        for table in ("patient", "course", "session"):
            clinic.rows(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count})")


def _statuses(clinic: Clinic) -> Counter[tuple[str, int]]:
    return Counter(clinic.rows("SELECT status, attempts FROM message"))


class Gate(Channel):
    """A channel whose sends wait for the test's `release`, counting those in flight."""

    def __init__(self, name: str, concurrency: int) -> None:
        self.name, self.concurrency = name, concurrency
        self.release = threading.Event()
        self.sent: Counter[int] = Counter()
        self.in_flight = 0
        self.changed = threading.Condition()
        self.closed = False

    def send(self, message: Outgoing) -> str:
        with self.changed:
            self.in_flight += 1
            self.changed.notify_all()
        assert self.release.wait(WAIT), "the test never released the sends"
        with self.changed:
            self.in_flight -= 1
            self.sent[message.message_id] += 1
        return f"{self.name}-{message.message_id}"

    def wait_in_flight(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.in_flight >= count, WAIT)

    def close(self) -> None:
        self.closed = True


def _wait_for(done: Callable[[], bool]) -> None:
    end = time.monotonic() + WAIT
    while not done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# -- (1) several requests in flight: a slow provider no longer sets the pace


def test_sends_to_a_slow_twilio_overlap_and_each_goes_once(clinic: Clinic,
                                                          fake_twilio: FakeTwilio) -> None:
    _due(clinic, 16)
    fake_twilio.script(*[slow(0.25)] * 16)  # Twilio takes 250 ms to answer each
    config = twilio_config(clinic, fake_twilio, concurrency=8)
    app = App.from_config(config, clock=FixedClock(DUE), console=io.StringIO())
    started = time.monotonic()
    counts = app.dispatcher().run_once()
    took = time.monotonic() - started
    assert counts.sent == 16
    assert took < 16 * 0.25 / 2, f"{took:.2f} s: not clearly faster than one at a time (4 s)"
    # Every message once: one request per number, and each row holds its own SID.
    assert Counter(m["to"] for m in fake_twilio.created) == {
        f"+1212555{i:04d}": 1 for i in range(1, 17)}
    assert sorted(sid for (sid,) in clinic.rows("SELECT provider_id FROM message")) == sorted(
        m["sid"] for m in fake_twilio.created)
    assert _statuses(clinic) == {("sent", 1): 16}


# -- (2) one rate for every daemon on the database, in segments


class VirtualWall:
    """The pace's wall clock, moved on only by a sender sleeping for its slot; each thread
    remembers the start of the slot it last waited for."""

    def __init__(self) -> None:
        self.now = WALL
        self._lock = threading.Lock()
        self._mine = threading.local()

    def clock(self) -> datetime:
        with self._lock:
            self._mine.slot = self.now  # no sleep follows when the slot starts at once
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._mine.slot = self._mine.slot + timedelta(seconds=seconds)
            self.now = max(self.now, self._mine.slot)

    def slot(self) -> datetime:
        slot: datetime = self._mine.slot
        return slot


class Meeting:
    """Holds every send of either daemon until both have sent: they interleave from the
    start (SQLite's busy handler could otherwise let one daemon take every claim)."""

    def __init__(self) -> None:
        self.arrived: set[int] = set()
        self.changed = threading.Condition()

    def arrive(self, daemon: object) -> None:
        with self.changed:
            self.arrived.add(id(daemon))
            self.changed.notify_all()
            assert self.changed.wait_for(lambda: len(self.arrived) == 2, WAIT)


class PacedSms(Channel):
    """An SMS channel that notes when (on the virtual wall) each send started, and what it
    cost: its segments, as Twilio counts them."""

    name = "sms"

    def __init__(self, wall: VirtualWall, pace: SharedPace, concurrency: int,
                 starts: list[tuple[datetime, int, int]], meeting: Meeting) -> None:
        self.wall, self.pace, self.concurrency = wall, pace, concurrency
        self.starts, self.meeting = starts, meeting

    def cost(self, message: Outgoing) -> float:
        return float(measure(message.text).segments)

    def send(self, message: Outgoing) -> str:
        assert message.paced  # the dispatcher waited for the slot; the channel must not
        self.starts.append((self.wall.slot(), int(self.cost(message)), message.message_id))
        self.meeting.arrive(self)
        return f"sms-{message.message_id}"


def _most_segments_in_a_second(starts: list[tuple[datetime, int, int]], rate: float) -> int:
    """The most segments in any 1-second window, each SMS's segments one slot apart (as
    Twilio sends a long SMS: one segment every 1 / rate seconds), in microseconds."""
    slots = sorted(round((at - WALL) / timedelta(microseconds=1) + index * 1e6 / rate)
                   for at, cost, _ in starts for index in range(cost))
    most, low = 0, 0
    for high, at in enumerate(slots):
        while slots[low] <= at - 1_000_000:
            low += 1
        most = max(most, high - low + 1)
    return most


def test_two_daemons_share_one_rate_counted_in_segments(clinic: Clinic) -> None:
    _due(clinic, 24)
    rate, wall = 4.0, VirtualWall()
    starts: list[tuple[datetime, int, int]] = []
    meeting = Meeting()
    dispatchers = []
    for _ in range(2):  # two daemons: each its own engine, pace and workers
        app = clinic.app(clock=FixedClock(DUE), console=io.StringIO())
        app.settings.daemon.batch_size = 4  # claims alternate between the two
        pace = SharedPace(app.engine, "sms", rate, clock=wall.clock, sleep=wall.sleep)
        app.channels["sms"] = PacedSms(wall, pace, 3, starts, meeting)
        dispatchers.append(app.dispatcher())
    threads = [_in_thread(dispatcher.run_once) for dispatcher in dispatchers]
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(message_id for _, _, message_id in starts) == list(range(1, 25))  # once each
    assert {cost for _, cost, _ in starts} == {2}  # first_48h with the STOP line: 2 segments
    # Never above the rate, counted in segments, over any second...
    assert _most_segments_in_a_second(starts, rate) <= rate
    # ...and each send started only once the one before had its segments' time.
    ordered = sorted(starts)
    for (before, cost, _), (after, _, _) in itertools.pairwise(ordered):
        assert after - before >= timedelta(seconds=cost / rate)
    # At the rate, not below it: 48 segments at 4 a second from the first send.
    assert ordered[-1][0] - ordered[0][0] == timedelta(seconds=(48 - 2) / rate)


# -- (3) stop with sends in flight


def test_stop_lets_the_sends_in_flight_finish_and_gives_back_the_rest(clinic: Clinic) -> None:
    _due(clinic, 8, "email")
    app = clinic.app(clock=FixedClock(DUE), console=io.StringIO())
    email = Gate("email", concurrency=3)
    app.channels["email"] = email
    stop = threading.Event()
    done: list[object] = []
    thread = _in_thread(lambda: done.append(app.dispatcher().run_once(stop)))
    email.wait_in_flight(3)
    stop.set()  # SIGTERM, three sends in flight
    thread.join(0.3)
    assert thread.is_alive(), "the pass must wait for its sends in flight"
    email.release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert sum(email.sent.values()) == 3 and max(email.sent.values()) == 1
    # The three in flight recorded as sent; the five never started handed back, their
    # attempt given back too; none left in `sending` for recovery.
    assert _statuses(clinic) == {("sent", 1): 3, ("pending", 0): 5}
    assert sorted(clinic.rows("SELECT provider_id FROM message WHERE status = 'sent'")) == sorted(
        (f"email-{message_id}",) for message_id in email.sent)


def test_a_stopping_sender_gives_back_what_waits_for_its_turn_at_the_rate(
        clinic: Clinic) -> None:
    _due(clinic, 2)
    app = clinic.app(clock=FixedClock(DUE), console=io.StringIO())
    stop = threading.Event()

    def stopped_meanwhile(seconds: float) -> None:
        stop.set()  # SIGTERM arrives while a send waits for its slot

    sms = Gate("sms", concurrency=2)
    sms.release.set()
    sms.pace = SharedPace(app.engine, "sms", 0.5, clock=lambda: WALL, sleep=stopped_meanwhile)
    app.channels["sms"] = sms
    counts = app.dispatcher().run_once(stop)
    # The first slot starts at once and is sent; the second waits 2 s and is handed back.
    assert counts.sent == 1 and sum(sms.sent.values()) == 1
    assert _statuses(clinic) == {("sent", 1): 1, ("pending", 0): 1}


# -- (4) recovery never takes a send in flight


def test_recovery_in_the_same_process_never_takes_a_row_in_flight_in_a_worker(
        clinic: Clinic) -> None:
    _due(clinic, 6, "sms,email")
    clock = FixedClock(DUE)
    app = clinic.app(clock=clock, console=io.StringIO())
    app.settings.email.timeout_seconds = 5  # all twelve rows in one claim
    sms = Gate("sms", concurrency=2)
    app.channels["sms"] = sms  # the workers; email stays on the console, sent by the pass itself
    dispatcher = app.dispatcher()
    thread = _in_thread(dispatcher.run_once)
    sms.wait_in_flight(2)
    # The pass sends the emails of the claim itself meanwhile: that part of the claim is
    # done, while its SMS are in flight or wait for a worker...
    _wait_for(lambda: clinic.count("message WHERE channel = 'email' AND status = 'sent'") == 6)
    assert clinic.count("message WHERE status = 'sending'") == 6
    # ...when the recovery job fires, a lease later.
    clock.now = DUE + timedelta(seconds=app.settings.daemon.lease_seconds + 5)
    assert dispatcher.recover_stale() == 0
    sms.release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert max(sms.sent.values()) == 1 and len(sms.sent) == 6
    assert _statuses(clinic) == {("sent", 1): 12}  # no attempt spent without a try


# -- (5) a long wait for the rate renews the claim


def _long_wait(clinic: Clinic, wait: float,
               meanwhile: Callable[[FixedClock], None] = lambda _clock: None,
               ) -> tuple[Gate, list[object]]:
    """One SMS whose slot at the rate is `wait` seconds away; `meanwhile` runs while its
    sender sleeps (the app's clock already moved on by `wait`). The claimed_at each send
    saw, in the database."""
    _due(clinic, 1)
    clock = FixedClock(DUE)
    app = clinic.app(clock=clock, console=io.StringIO())
    # Other daemons took the slots of the next `wait` seconds.
    clinic.rows("INSERT INTO sendpace (name, next_at) VALUES ('sms',"
                f" '{WALL + timedelta(seconds=wait):{SQLITE_TIME}}')")

    def sleep(seconds: float) -> None:
        assert seconds == wait
        clock.now += timedelta(seconds=seconds)
        meanwhile(clock)

    seen: list[object] = []

    class Seeing(Gate):
        def send(self, message: Outgoing) -> str:
            seen.extend(clinic.rows(f"SELECT claimed_at FROM message WHERE id = {message.message_id}"))
            return super().send(message)

    sms = Seeing("sms", concurrency=2)
    sms.release.set()
    sms.pace = SharedPace(app.engine, "sms", 1.0, clock=lambda: WALL, sleep=sleep)
    app.channels["sms"] = sms
    app.dispatcher().run_once()
    return sms, seen


def test_a_send_after_a_long_wait_for_the_rate_renews_its_claim_first(clinic: Clinic) -> None:
    sms, seen = _long_wait(clinic, 100)  # more than a quarter lease (75 s)
    assert sum(sms.sent.values()) == 1
    # Renewed when the wait ended, not left at the claim: the send has a whole lease.
    assert seen == [(f"{DUE + timedelta(seconds=100):{SQLITE_TIME}}",)]


def test_a_claim_taken_over_during_a_long_wait_is_not_sent(clinic: Clinic) -> None:
    other: list[Gate] = []

    def another_daemon_takes_it_over(clock: FixedClock) -> None:
        # The wait outlasted the lease: another daemon recovers the row and sends it.
        app = clinic.app(clock=clock, console=io.StringIO())
        other.append(Gate("sms", concurrency=1))
        other[0].release.set()
        app.channels["sms"] = other[0]
        dispatcher = app.dispatcher()
        assert dispatcher.recover_stale() == 1
        assert dispatcher.run_once().sent == 1

    sms, seen = _long_wait(clinic, 400, another_daemon_takes_it_over)
    assert seen == [] and sms.sent == Counter()  # the first sender skipped it
    assert sum(other[0].sent.values()) == 1
    assert _statuses(clinic) == {("sent", 2): 1}  # the stalled claim counts as an attempt


# -- claims sized for concurrency and pace; configuration


def test_a_claim_fits_in_the_lease_at_the_channels_concurrency_and_rate(clinic: Clinic) -> None:
    app = clinic.app(console=io.StringIO())
    lease = app.settings.daemon.lease_seconds  # 300; timeouts: sms 10 s, email 30 s
    app.channels["email"] = Gate("email", concurrency=4)
    sms = Gate("sms", concurrency=8)
    app.channels["sms"] = sms
    dispatcher = app.dispatcher()
    assert dispatcher.batch_limit() == 4 * lease / 2 / 30 == 20  # email: 4 at a time
    sms.max_cost = 3
    sms.pace = SharedPace(app.engine, "sms", 0.2)
    # 0.2 segments a second, SMS of up to 3 segments: 5 fit in a quarter lease.
    assert dispatcher.batch_limit() == int(lease / 4 * 0.2 / 3) == 5


def test_concurrency_and_rates_have_defaults() -> None:
    settings = Settings()
    assert (settings.sms.concurrency, settings.email.concurrency) == (8, 4)
    assert settings.email.rate_per_second == 0  # email unpaced unless the relay needs it


@pytest.mark.parametrize(("text", "problem"), [
    ("[sms]\nconcurrency = 0\n", "sms.concurrency: Input should be greater than or equal to 1"),
    ("[sms]\nconcurrency = 65\n", "sms.concurrency: Input should be less than or equal to 64"),
    ("[email]\nconcurrency = 33\n",
     "email.concurrency: Input should be less than or equal to 32"),
    ("[email]\nconcurrency = 1.5\n", "email.concurrency: Input should be a valid integer"),
    ("[email]\nrate_per_second = -1\n",
     "email.rate_per_second: Input should be greater than or equal to 0"),
])
def test_concurrency_and_rates_are_checked(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "aftercare.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_settings(config)
    assert caught.value.problem.startswith(problem), caught.value.problem
    assert str(config) in caught.value.problem


def test_the_largest_configuration_gets_a_connection_per_worker(clinic: Clinic) -> None:
    # SQLAlchemy's default pool (5 + 10) made workers beyond 15 wait for a connection.
    workers = 64 + 32  # the highest sms.concurrency and email.concurrency
    engine = clinic.app().engine
    held = []
    try:
        for _ in range(workers + 4):  # the pass itself, recovery, replies, notices
            held.append(engine.connect())  # without a free one: waits, then TimeoutError
        assert all(not connection.closed for connection in held)
    finally:
        for connection in held:
            connection.close()
