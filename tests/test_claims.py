"""Claims own their rows: several senders on one database send every message exactly once.

Each test runs real dispatchers on one SQLite file in threads; a channel that blocks on an
event stands for a slow provider, and the shared injected clock jumps past the lease.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest

from aftercare.app import App
from aftercare.channels import Channel, Outgoing
from aftercare.dispatch import Dispatcher
from conftest import Clinic, FixedClock, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

SESSION = utc("2026-03-02T10:30-05:00")
DUE = SESSION + timedelta(hours=1)  # first_48h is due on sms and email
WAIT = 20  # seconds a test thread may take before the test gives up (never reached when green)


class GatedChannel(Channel):
    """A channel that runs the test's next action on each send (e.g. hold it in flight)."""

    def __init__(self, name: str, sends: Counter[int]) -> None:
        self.name = name
        self.sends = sends
        self.actions: list[Callable[[], None]] = []
        self.entered = threading.Event()

    def send(self, message: Outgoing) -> str:
        self.sends[message.message_id] += 1
        self.entered.set()
        if self.actions:
            self.actions.pop(0)()
        return f"{self.name}-{message.message_id}"


class Sender:
    """One dispatcher (its own engine, as another process would have) with gated channels."""

    def __init__(self, clinic: Clinic, clock: FixedClock, sends: Counter[int]) -> None:
        self.app: App = clinic.app(clock=clock, console=io.StringIO())
        self.channel = GatedChannel("both", sends)
        self.app.channels.update(sms=self.channel, email=self.channel)
        self.dispatcher: Dispatcher = self.app.dispatcher()
        self.release = threading.Event()

    def hold(self) -> None:
        assert self.release.wait(WAIT), "the test never released the send"

    def in_thread(self, stop: threading.Event | None = None) -> threading.Thread:
        thread = threading.Thread(target=self.dispatcher.run_once, args=(stop,), daemon=True)
        thread.start()
        return thread


@pytest.fixture
def enrolled(clinic: Clinic) -> Clinic:
    for ref in ("J1", "J2"):  # first_48h due for both: four rows, one batch
        clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123",
                    "--email", "jane@example.com", "--ref", ref)
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", ref, "--treatment",
                    "cellulite", "--session-at", "2026-03-02T10:30")
    return clinic


def _lease(clinic: Clinic) -> timedelta:
    return timedelta(seconds=clinic.app().settings.daemon.lease_seconds)


def _sent(clinic: Clinic) -> list[tuple[int]]:
    return clinic.rows("SELECT attempts FROM message WHERE status = 'sent'")


def _takeover(clinic: Clinic, clock: FixedClock, sends: Counter[int],
              stop: threading.Event | None = None) -> tuple[Sender, Sender, threading.Thread]:
    """A first sender mid-batch, a second one holding a row it recovered from that batch."""
    first, second = Sender(clinic, clock, sends), Sender(clinic, clock, sends)
    lease = _lease(clinic)

    def slow_but_in_time() -> None:
        clock.now = DUE + lease - timedelta(seconds=10)

    in_flight = threading.Event()

    def held() -> None:
        in_flight.set()
        first.hold()

    # The first send is slow; the second is held in flight, its claim renewed just now.
    first.channel.actions = [slow_but_in_time, held]
    thread = first.in_thread(stop)
    assert in_flight.wait(WAIT)
    # The rows still waiting in the first sender's batch were claimed a lease ago.
    clock.now = DUE + lease + timedelta(seconds=5)
    assert second.dispatcher.recover_stale() == 2
    second.channel.actions = [second.hold]
    return first, second, thread


def test_a_second_sender_never_sends_a_row_still_waiting_in_the_first_ones_batch(
        enrolled: Clinic) -> None:
    clock, sends = FixedClock(DUE), Counter[int]()
    first, second, thread = _takeover(enrolled, clock, sends)
    other = second.in_thread()
    assert second.channel.entered.wait(WAIT)  # the second sender took a row over...
    first.release.set()  # ...and the first one goes on with its batch meanwhile
    thread.join(WAIT)
    second.release.set()
    other.join(WAIT)
    assert not thread.is_alive() and not other.is_alive()
    assert max(sends.values()) == 1, f"sent twice: {sends}"
    # The two rows taken over count the stalled sender's claim as an interrupted attempt.
    assert sorted(_sent(enrolled)) == [(1,), (1,), (2,), (2,)]


def test_a_stopping_sender_gives_back_only_the_claims_that_are_still_its_own(
        enrolled: Clinic) -> None:
    clock, sends = FixedClock(DUE), Counter[int]()
    stop = threading.Event()
    first, second, thread = _takeover(enrolled, clock, sends, stop)
    other = second.in_thread()
    assert second.channel.entered.wait(WAIT)  # the second sender is sending a row
    stop.set()  # SIGTERM: the first sender gives back what it has not started
    first.release.set()
    thread.join(WAIT)
    # Had the second sender's rows gone back to pending, a third sender would send them now.
    Sender(enrolled, clock, sends).dispatcher.run_once()
    second.release.set()
    other.join(WAIT)
    assert max(sends.values()) == 1, f"sent twice: {sends}"
    # The two rows taken over count the stalled sender's claim as an interrupted attempt.
    assert sorted(_sent(enrolled)) == [(1,), (1,), (2,), (2,)]


def test_recovery_in_the_same_process_leaves_the_pass_in_flight_alone(enrolled: Clinic) -> None:
    clock, sends = FixedClock(DUE), Counter[int]()
    sender = Sender(enrolled, clock, sends)
    sender.channel.actions = [sender.hold]
    thread = sender.in_thread()
    assert sender.channel.entered.wait(WAIT)
    # The daemon's recovery job fires while the dispatch job is mid-batch, a lease later.
    clock.now = DUE + _lease(enrolled) + timedelta(seconds=5)
    assert sender.dispatcher.recover_stale() == 0
    sender.release.set()
    thread.join(WAIT)
    # No attempt was spent without a real try.
    assert _sent(enrolled) == [(1,)] * 4
    assert max(sends.values()) == 1


def test_a_pass_claims_no_more_than_it_can_send_within_the_lease(clinic: Clinic) -> None:
    for i in range(30):
        clinic.json("patient", "add", "--name", f"P {i}", "--email", f"p{i}@example.com",
                    "--ref", f"P{i}")
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", f"P{i}", "--treatment",
                    "cellulite", "--session-at", "2026-03-02T10:30")
    app = clinic.app(clock=FixedClock(DUE), console=io.StringIO())
    settings = app.settings
    claimed: list[int] = []

    def count_batch(message: Outgoing) -> None:
        if not claimed:
            claimed.append(clinic.count("message WHERE status = 'sending'"))

    class Counting(GatedChannel):
        def send(self, message: Outgoing) -> str:
            count_batch(message)
            return super().send(message)

    app.channels["email"] = Counting("email", Counter[int]())
    app.dispatcher().run_once()
    # Every send may take its whole timeout: a batch must fit in half the lease.
    worst = max(settings.sms.timeout_seconds + 1 / settings.sms.rate_per_second,
                settings.email.timeout_seconds)
    assert 1 <= claimed[0] <= settings.daemon.lease_seconds / 2 / worst
    assert clinic.count("message WHERE status = 'sent'") == 30


def test_a_claimed_reminder_of_a_session_moved_meanwhile_is_not_sent(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--ref", "J1")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30", "--next-session-at", "2026-03-16T10:30")
    (due,), = clinic.rows("SELECT send_after FROM message WHERE step = 'session_reminder'")
    at = utc(due.replace(" ", "T") + "+00:00")
    sends = Counter[int]()
    sender = Sender(clinic, FixedClock(at), sends)
    claims = sender.dispatcher.claim(10)
    assert claims  # the reminder of the 16th is claimed...
    moved = clinic.run("--now", at.isoformat(), "session", "reschedule", "2",
                       "--at", "2026-03-20T10:30")  # ...when the patient moves the session
    assert moved.exit_code == 0, moved.output
    for claim in claims:
        sender.dispatcher.process(claim)
    assert sends == Counter(), "the reminder named the old day"
    rows = clinic.rows("SELECT occurrence, status, last_error FROM message "
                       "WHERE step = 'session_reminder' ORDER BY occurrence")
    assert rows[0][:2] == (0, "cancelled") and "moved" in rows[0][2]
    assert rows[1][:2] == (1, "pending")  # the reminder of the new day
    kinds = [k for (k,) in clinic.rows("SELECT detail FROM event WHERE kind = 'message.cancelled'")]
    assert any("found at send time" in k for k in kinds)
