"""Dispatch with an injected clock: what is sent when, and what happens when sends fail."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import ExecutionContext
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from aftercare.app import App
from aftercare.channels import Channel, Outgoing
from aftercare.dispatch import Claim
from aftercare.errors import SendError
from aftercare.models import Course, Message, Patient, Session
from aftercare.outbox import next_due
from aftercare.planning import _wanted, why_unwanted
from aftercare.queries import sessions_of, sessions_of_courses
from aftercare.rendering import Rendered
from conftest import Clinic, FixedClock, recover_at, run_at, utc

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL

SESSION = utc("2026-03-02T10:30-05:00")  # a Monday, well away from DST


class ScriptedChannel(Channel):
    """A channel whose outcomes the test scripts; records what it was asked to send."""

    # BaseException too: a script can kill the sender mid-send, as a dying process would.
    def __init__(self, name: str, outcomes: list[BaseException | None] | None = None,
                 on_send: object = None) -> None:
        self.name = name
        self.outcomes = list(outcomes or [])
        self.sent: list[Outgoing] = []
        self.on_send = on_send

    def send(self, message: Outgoing) -> str:
        if callable(self.on_send):
            self.on_send(message)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(message)
        return f"scripted-{message.message_id}"


@pytest.fixture
def enrolled(clinic: Clinic) -> Clinic:
    clinic.json("patient", "add", "--name", "Jane <b>Doe</b>", "--phone", "+12125550123",
                "--email", "jane@example.com", "--ref", "J1")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30", "--next-session-at", "2026-03-16T10:30")
    return clinic


def _app(clinic: Clinic, clock: FixedClock, **channels: ScriptedChannel) -> App:
    app = clinic.app(clock=clock, console=io.StringIO())
    app.channels.update(channels)
    return app


def _status(clinic: Clinic, step: str, channel: str) -> tuple:
    return clinic.rows(f"SELECT status, attempts, last_error FROM message "
                       f"WHERE step = '{step}' AND channel = '{channel}'")[0]


def test_each_message_goes_at_its_time_and_only_once(enrolled: Clinic) -> None:
    sms = ScriptedChannel("sms")
    clock = FixedClock(SESSION + timedelta(minutes=59))
    dispatcher = _app(enrolled, clock, sms=sms).dispatcher()
    assert run_at(dispatcher, clock.now).sent == 0
    clock.now = SESSION + timedelta(hours=1)
    counts = run_at(dispatcher, clock.now)
    assert (counts.sent, counts.total) == (2, 2)  # first_48h on sms and email
    assert run_at(dispatcher, clock.now).total == 0
    assert [m.step for m in sms.sent] == ["first_48h"]
    # A daemon that never misses a beat: tick at each next due time for 60 days.
    end = SESSION + timedelta(days=60)
    while (due := next_due(dispatcher.engine)) is not None and due < end:
        clock.now = due
        run_at(dispatcher, clock.now)
    # Everything is sent exactly once, in planned order.
    assert [m.step for m in sms.sent] == ["first_48h", "arnica", "activity", "check_48h",
                                          "routine", "next_session", "session_reminder",
                                          "results"]
    assert enrolled.rows("SELECT status, count(*) FROM message GROUP BY status ORDER BY status") == [
        ("sent", 16)]


def test_sent_message_stores_rendered_text_and_provider_id(enrolled: Clinic) -> None:
    clock = FixedClock(SESSION + timedelta(days=60))
    app = enrolled.app(clock=clock, console=io.StringIO())
    for moment in (SESSION + timedelta(hours=1), SESSION + timedelta(hours=4)):
        clock.now = moment
        run_at(app.dispatcher(), moment)
    rows = enrolled.rows("SELECT step, channel, provider_id, body, subject, sent_at FROM message "
                         "WHERE status = 'sent' ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [("first_48h", "sms"), ("first_48h", "email"),
                                            ("arnica", "sms"), ("arnica", "email")]
    first_sms, _, second_sms, _ = (r[3] for r in rows)
    assert "Reply STOP to opt out" in first_sms
    assert "Reply STOP" not in second_sms  # only the first SMS a patient ever gets
    for _step, channel, provider_id, body, subject, sent_at in rows:
        assert provider_id and provider_id.startswith("console-")
        assert "Lumiere Aesthetics" in body and "+1 212 555 0100" in body
        assert (subject is None) == (channel == "sms")
        assert sent_at is not None
        assert "\u202f" not in body and "\xa0" not in body


def test_html_part_escapes_patient_data(enrolled: Clinic) -> None:
    email = ScriptedChannel("email")
    clock = FixedClock(SESSION + timedelta(hours=1))
    run_at(_app(enrolled, clock, email=email).dispatcher(), clock.now)
    [message] = email.sent
    assert message.html is not None and message.subject is not None
    assert "Jane &lt;b&gt;Doe" not in message.html  # greets the first name only...
    assert "<b>" not in message.html  # ...and never lets markup through
    assert "Jane" in message.text and "911" in message.text


def test_a_week_long_outage_expires_stale_messages(enrolled: Clinic) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    now = utc("2026-03-08T12:00-05:00")  # six days later, at noon
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms, email=email).dispatcher(), now)
    assert counts.expired == 8  # first_48h, arnica, activity, check_48h on both channels
    assert counts.sent == 2  # routine (day 6, 10:00, valid for 2 days) still worth it
    assert [m.step for m in sms.sent] == ["routine"]
    assert _status(enrolled, "first_48h", "sms")[0] == "expired"
    assert _status(enrolled, "next_session", "sms")[0] == "pending"


def test_due_inside_quiet_hours_is_deferred_to_the_morning(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Kim Lee", "--phone", "+12125550125", "--ref", "K1")
    clinic.json("--now", "2026-03-02T18:30-05:00", "enroll", "K1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T18:00")
    sms = ScriptedChannel("sms")
    now = utc("2026-03-02T20:30-05:00")  # first_48h was due at 19:00; the daemon was down
    app = _app(clinic, FixedClock(now), sms=sms)
    counts = run_at(app.dispatcher(), now)
    assert (counts.deferred, counts.sent) == (1, 0)
    assert _status(clinic, "first_48h", "sms") == ("pending", 0, None)
    assert clinic.rows("SELECT send_after FROM message WHERE step = 'first_48h'") == [
        ("2026-03-03 14:00:00.000000",)]  # 09:00 EST
    counts = run_at(app.dispatcher(), utc("2026-03-03T09:00-05:00"))
    assert counts.sent == 2  # first_48h, and arnica (22:00 was planned for 09:00)
    assert [m.step for m in sms.sent] == ["first_48h", "arnica"]


def test_window_ending_inside_quiet_hours_expires(enrolled: Clinic) -> None:
    now = utc("2026-03-02T21:00-05:00")  # down all day: 11:30 and 14:30 sends missed
    counts = run_at(_app(enrolled, FixedClock(now)).dispatcher(), now)
    # Held to 09:00 they would be ~20 hours late, past their 16-hour window.
    assert (counts.expired, counts.deferred, counts.sent) == (4, 0, 0)
    assert _status(enrolled, "arnica", "sms") == ("expired", 0,
                                                  "validity window ends inside quiet hours")


def test_consent_withdrawn_before_send_cancels(enrolled: Clinic) -> None:
    enrolled.rows("UPDATE patient SET channels = 'email'")
    sms = ScriptedChannel("sms")
    now = SESSION + timedelta(hours=1)
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms).dispatcher(), now)
    assert (counts.cancelled, counts.sent) == (1, 1)
    assert sms.sent == []
    assert _status(enrolled, "first_48h", "sms") == ("cancelled", 0,
                                                     "patient has not consented to sms")


def test_transient_failure_retries_with_backoff_then_sends(enrolled: Clinic) -> None:
    sms = ScriptedChannel("sms", [SendError("HTTP 503", permanent=False)])
    now = SESSION + timedelta(hours=1)
    app = _app(enrolled, FixedClock(now), sms=sms)
    dispatcher = app.dispatcher(random.Random(7))
    assert run_at(dispatcher, now).retrying == 1
    status, attempts, error = _status(enrolled, "first_48h", "sms")
    assert (status, attempts, error) == ("pending", 1, "HTTP 503")
    [(retry_at,)] = enrolled.rows("SELECT send_after FROM message WHERE step = 'first_48h' "
                                  "AND channel = 'sms'")
    delay = datetime.fromisoformat(retry_at) - now.replace(tzinfo=None)
    assert timedelta(seconds=48) <= delay <= timedelta(seconds=72)  # 60 s +- 20 % jitter
    assert run_at(dispatcher, now + timedelta(seconds=30)).total == 0
    assert run_at(dispatcher, now + timedelta(seconds=80)).sent == 1
    assert _status(enrolled, "first_48h", "sms") == ("sent", 2, None)


def test_backoff_grows_exponentially_and_is_capped(enrolled: Clinic) -> None:
    dispatcher = enrolled.app().dispatcher(random.Random(1))
    delays = [dispatcher.backoff(n).total_seconds() for n in range(1, 10)]
    assert 48 <= delays[0] <= 72 and 96 <= delays[1] <= 144 and 192 <= delays[2] <= 288
    assert all(d <= 3600 * 1.2 for d in delays) and delays[-1] >= 3600 * 0.8


def test_transient_failures_stop_at_max_attempts(enrolled: Clinic) -> None:
    sms = ScriptedChannel("sms", [SendError("timeout", permanent=False)] * 5)
    now = SESSION + timedelta(hours=1)
    dispatcher = _app(enrolled, FixedClock(now), sms=sms).dispatcher()
    outcomes = []
    # Passes just after each backoff (60, 120, 240, 480 s, +-20 %) has run out.
    for minutes in (0, 3, 8, 15, 30):
        counts = run_at(dispatcher, now + timedelta(minutes=minutes))
        outcomes.append((counts.retrying, counts.failed))
    assert outcomes == [(1, 0)] * 4 + [(0, 1)]
    assert _status(enrolled, "first_48h", "sms") == ("failed", 5, "timeout")


def test_permanent_failure_fails_at_once_with_its_code(enrolled: Clinic) -> None:
    sms = ScriptedChannel("sms", [SendError("unknown destination", permanent=True, code="21211")])
    now = SESSION + timedelta(hours=1)
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms).dispatcher(), now)
    assert counts.failed == 1
    assert _status(enrolled, "first_48h", "sms") == ("failed", 1, "21211: unknown destination")


def test_unexpected_channel_error_is_retried_not_lost(enrolled: Clinic) -> None:
    sms = ScriptedChannel("sms", [RuntimeError("boom")])
    now = SESSION + timedelta(hours=1)
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms).dispatcher(), now)
    assert counts.retrying == 1
    assert _status(enrolled, "first_48h", "sms")[0] == "pending"


def test_crash_after_claim_is_recovered_after_the_lease(enrolled: Clinic) -> None:
    now = SESSION + timedelta(hours=1)
    sms = ScriptedChannel("sms")
    claimed = _app(enrolled, FixedClock(now)).dispatcher().claim(10)  # ...then that process dies
    assert len(claimed) == 2
    dispatcher = _app(enrolled, FixedClock(now), sms=sms).dispatcher()
    assert run_at(dispatcher, now).total == 0  # claimed rows are not sent twice
    assert recover_at(dispatcher, now + timedelta(seconds=299)) == 0
    later = now + timedelta(seconds=301)
    assert recover_at(dispatcher, later) == 2
    assert run_at(dispatcher, later).sent == 2
    assert [m.step for m in sms.sent] == ["first_48h"]
    # The dead sender's claim counts as an interrupted attempt.
    assert _status(enrolled, "first_48h", "sms")[:2] == ("sent", 2)


def test_a_taken_over_claim_is_not_overwritten(enrolled: Clinic) -> None:
    now = SESSION + timedelta(hours=1)
    late = now + timedelta(minutes=10)

    def recover_meanwhile(message: Outgoing) -> None:
        # The lease ran out while this send hung; another sender requeues and resends it.
        if message.step == "first_48h" and not hung:
            hung.append(message)
            recover_at(other, late)
            assert run_at(other, late).sent == 1

    hung: list[Outgoing] = []
    sms = ScriptedChannel("sms", on_send=recover_meanwhile)
    app = _app(enrolled, FixedClock(now), sms=sms, email=ScriptedChannel("email"))
    other = _app(enrolled, FixedClock(now), email=ScriptedChannel("email")).dispatcher()
    dispatcher = app.dispatcher()
    dispatcher.process(dispatcher.claim(1)[0])
    # The recovered send was recorded at `late`; the hung one must not overwrite it.
    assert enrolled.rows("SELECT status, sent_at FROM message WHERE step = 'first_48h' "
                         "AND channel = 'sms'") == [("sent", "2026-03-02 16:40:00.000000")]


def test_stop_between_messages_gives_back_unstarted_claims(enrolled: Clinic) -> None:
    stop = threading.Event()
    sms = ScriptedChannel("sms", on_send=lambda _m: stop.set())
    now = SESSION + timedelta(hours=1)  # first_48h due on sms, then email
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms).dispatcher(), now, stop)
    assert counts.sent == 1  # the send in flight finishes...
    # ...and the claimed email is handed back untouched, not left for lease recovery.
    assert _status(enrolled, "first_48h", "sms") == ("sent", 1, None)
    assert _status(enrolled, "first_48h", "email") == ("pending", 0, None)
    assert enrolled.count("message WHERE status = 'sending'") == 0


@pytest.mark.sqlite_only  # SQLite's query plans; PostgreSQL's depend on its statistics
def test_dispatch_queries_stay_on_indexes(enrolled: Clinic) -> None:
    """Claiming and recording must not walk the pending rows of the future."""
    app = enrolled.app(console=io.StringIO())
    # A statement's DBAPI parameters (sqlite3: one row's), handed back unchanged to EXPLAIN it.
    statements: list[tuple[str, Sequence[Any] | Mapping[str, Any]]] = []

    @event.listens_for(app.engine, "before_cursor_execute")
    def capture(conn: Connection, cursor: DBAPICursor, statement: str,
                parameters: Sequence[Any] | Mapping[str, Any], context: ExecutionContext | None,
                executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT MESSAGE.ID", "UPDATE MESSAGE")):
            statements.append((statement, parameters))

    now = SESSION + timedelta(hours=1)
    dispatcher = app.dispatcher()
    run_at(dispatcher, now)
    recover_at(dispatcher, now)
    event.remove(app.engine, "before_cursor_execute", capture)
    with app.engine.connect() as conn:
        plans = [(sql, " ".join(str(row[-1]) for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {sql}", params))) for sql, params in statements]
    assert all("SCAN message" not in plan for _, plan in plans), plans
    claim = [plan for sql, plan in plans if "send_after <=" in sql]
    assert claim and all("INDEX ix_message_status_send_after (status=? AND send_after<?)" in p
                         and "TEMP B-TREE" not in p for p in claim), claim
    updates = [(sql, plan) for sql, plan in plans if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) >= 3  # claim, record sent, recover
    for sql, plan in updates:
        if "claimed_at <" in sql:
            # Recovery reads only rows in 'sending': at most a batch per daemon.
            assert "ix_message_status_send_after (status=?)" in plan, (sql, plan)
        else:
            assert "INTEGER PRIMARY KEY" in plan, (sql, plan)


def test_a_message_that_keeps_crashing_the_sender_is_failed(enrolled: Clinic) -> None:
    now = SESSION + timedelta(hours=1)

    class Killed(BaseException):
        """The process dies: nothing after the send starts gets recorded."""

    for crash in range(5):  # the process dies mid-send, five times over
        moment = now + timedelta(hours=crash)
        dying = _app(enrolled, FixedClock(moment), sms=ScriptedChannel("sms", [Killed()]))
        dying.settings.daemon.batch_size = 1
        with pytest.raises(Killed):
            dying.dispatcher().run_once()
        recover_at(_app(enrolled, FixedClock(moment)).dispatcher(),
                   moment + timedelta(minutes=6))
    assert _status(enrolled, "first_48h", "sms") == ("failed", 5, "send interrupted 5 times")
    assert _status(enrolled, "first_48h", "email")[0] == "pending"


def test_database_errors_never_carry_bound_values(enrolled: Clinic) -> None:
    # Errors end up in logs; SQLAlchemy puts bound values in them unless told not to.
    app = enrolled.app()
    with pytest.raises(DBAPIError) as caught, app.engine.begin() as conn:
        conn.execute(text("UPDATE patient SET phone = :p WHERE nope = 1"), {"p": "+12125550199"})
    assert "nope" in str(caught.value)
    assert "+12125550199" not in str(caught.value)


def test_a_slow_batch_never_lets_recovery_take_a_send_in_flight(enrolled: Clinic) -> None:
    now = SESSION + timedelta(hours=1)
    clock = FixedClock(now)
    recovered: list[int] = []

    def earlier_sends_were_slow(message: Outgoing) -> None:
        clock.now = now + timedelta(seconds=305)  # the batch was claimed over a lease ago

    def recovery_runs_meanwhile(message: Outgoing) -> None:
        recovered.append(recover_at(dispatcher, clock.now))

    sms = ScriptedChannel("sms", on_send=earlier_sends_were_slow)
    email = ScriptedChannel("email", on_send=recovery_runs_meanwhile)
    dispatcher = _app(enrolled, clock, sms=sms, email=email).dispatcher()
    dispatcher.run_once()  # claims first_48h on sms and email as one batch
    assert recovered == [0]  # the email in flight renewed its claim when it started
    dispatcher.run_once()
    assert [m.step for m in email.sent] == ["first_48h"]  # sent once, not twice
    assert _status(enrolled, "first_48h", "email")[0] == "sent"


def test_setup_problem_keeps_the_attempt_and_waits(enrolled: Clinic) -> None:
    now = SESSION + timedelta(hours=1)
    sms = ScriptedChannel("sms", [SendError("HTTP 401: account or sender refused",
                                            permanent=False, code="20003", setup_problem=True)])
    counts = run_at(_app(enrolled, FixedClock(now), sms=sms).dispatcher(), now)
    assert counts.retrying == 1
    assert _status(enrolled, "first_48h", "sms") == ("pending", 0,
                                                     "20003: HTTP 401: account or sender refused")
    assert enrolled.rows("SELECT send_after FROM message WHERE step = 'first_48h' "
                         "AND channel = 'sms'") == [("2026-03-02 16:35:00.000000",)]  # +5 min


def test_maintenance_reminder_is_dropped_once_the_patient_rebooks(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Ana Diaz", "--phone", "+12125550126", "--ref", "A1")
    out = clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "A1", "--treatment",
                      "hyaluronic-acid", "--session-at", "2026-03-02T10:30")
    assert "maintenance" in {m["step"] for m in out["messages"]}  # a one-session course
    maintenance_at = max(utc(m["send_after"]) for m in out["messages"]
                         if m["step"] == "maintenance")
    # Before the reminder is due, the patient books the next monthly session.
    clinic.json("--now", "2026-03-20T11:00-04:00", "enroll", "A1", "--treatment",
                "hyaluronic-acid", "--session-at", "2026-03-02T10:30",
                "--next-session-at", "2026-04-06T10:30")
    # Booking cancelled the whole series at once, with the reason.
    assert set(clinic.rows("SELECT status, last_error FROM message "
                           "WHERE step = 'maintenance'")) == {
        ("cancelled", "session 1 completed; session 2 booked")}
    counts = run_at(clinic.app(console=io.StringIO()).dispatcher(), maintenance_at)
    assert counts.sent == 0


def test_send_time_check_drops_a_maintenance_reminder_the_plan_did_not_see(
        clinic: Clinic) -> None:
    # Another program wrote a booking straight into the database: the dispatcher's own
    # check still keeps the stale reminder from going.
    clinic.json("patient", "add", "--name", "Ana Diaz", "--phone", "+12125550126", "--ref", "A1")
    out = clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "A1", "--treatment",
                      "hyaluronic-acid", "--session-at", "2026-03-02T10:30")
    first = min(utc(m["send_after"]) for m in out["messages"] if m["step"] == "maintenance")
    clinic.rows("INSERT INTO session (course_id, number, number_fixed, at, moves, status, created_at) "
                "VALUES "
                "(1, 2, FALSE, '2026-04-06 14:30:00', 0, 'booked', '2026-03-20 15:00:00')")
    counts = run_at(clinic.app(console=io.StringIO()).dispatcher(), first)
    assert (counts.sent, counts.cancelled) == (0, 1)
    assert clinic.rows("SELECT status, last_error FROM message WHERE step = 'maintenance' "
                       "AND occurrence = 1") == [("cancelled", "a later session is booked or done")]


def test_one_message_that_breaks_the_sender_does_not_end_the_pass(
    enrolled: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = SESSION + timedelta(hours=1)  # first_48h due on sms and email
    app = _app(enrolled, FixedClock(now), sms=ScriptedChannel("sms"))
    render = app.renderer.render

    def broken_for_sms(locale: str, step: str, channel: str, context: dict[str, Any]) -> Rendered:
        if channel == "sms":
            raise RuntimeError("a bug")
        return render(locale, step, channel, context)

    # Through monkeypatch: mypy refuses a plain assignment to a method.
    monkeypatch.setattr(app.renderer, "render", broken_for_sms)
    counts = app.dispatcher().run_once()
    assert (counts.sent, counts.retrying) == (1, 1)
    assert _status(enrolled, "first_48h", "sms") == ("pending", 1, "internal error: RuntimeError")
    assert _status(enrolled, "first_48h", "email")[0] == "sent"


def _due_for(clinic: Clinic, patients: int) -> None:
    """`patients` patients, each with first_48h due on sms and email an hour after SESSION."""
    for i in range(patients):
        clinic.json("patient", "add", "--name", f"Pat {i}", "--phone", f"+1212555014{i}",
                    "--email", f"p{i}@example.com", "--ref", f"P{i}")
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", f"P{i}", "--treatment",
                    "cellulite", "--session-at", "2026-03-02T10:30")


def test_console_channels_claim_a_whole_batch(clinic: Clinic,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A console never waits on a provider: its claims are not sized by a timeout it
    # never waits out (300 s lease / 2 / email's 30 s would make claims of 5).
    _due_for(clinic, 4)
    app = clinic.app(console=io.StringIO())
    dispatcher = app.dispatcher()
    assert dispatcher.batch_limit() == app.settings.daemon.batch_size == 50
    claimed: list[int] = []
    claim = dispatcher.claim

    def counted(limit: int, **kwargs: Any) -> list[Claim]:
        claims = claim(limit, **kwargs)
        claimed.append(len(claims))
        return claims

    monkeypatch.setattr(dispatcher, "claim", counted)
    assert run_at(dispatcher, SESSION + timedelta(hours=1)).sent == 8
    assert claimed == [8, 0]  # all eight in one claim
    # Beside a channel that may wait on a provider, the claim is its size again.
    app.channels["email"] = ScriptedChannel("email")
    assert app.dispatcher().batch_limit() == 1 * 300 / 2 / 30 == 5
    app.settings.daemon.batch_size = 3
    assert app.dispatcher().batch_limit() == 3  # and never above the configured batch


def test_a_group_never_overwrites_a_claim_taken_over_meanwhile(clinic: Clinic) -> None:
    _due_for(clinic, 3)
    now = SESSION + timedelta(hours=1)
    late = now + timedelta(seconds=360)  # past the lease of every claim of the first pass
    other = _app(clinic, FixedClock(late)).dispatcher()  # console channels
    taken_over: list[tuple[int, int]] = []

    def hangs_past_the_lease(message: Outgoing) -> None:
        # The second patient's SMS (in a group, after the first patient's email, whose
        # send is not written yet) hangs: another sender takes the claim over.
        if message.patient_id == 2 and not taken_over:
            taken_over.append((recover_at(other, late), run_at(other, late).sent))

    sms = ScriptedChannel("sms", on_send=hangs_past_the_lease)
    email = ScriptedChannel("email")
    dispatcher = _app(clinic, FixedClock(now), sms=sms, email=email).dispatcher()
    run_at(dispatcher, now)
    # The claim held five rows (email's timeout): the four not yet written went back to
    # pending, and the other sender sent them with the sixth.
    assert taken_over == [(4, 5)]
    assert [(m.patient_id, m.channel) for m in sms.sent + email.sent] == [
        (1, "sms"), (2, "sms"), (1, "email")]
    # Only the first SMS, sent and written before the takeover, is the first sender's:
    # the writes of the two sends in flight found their claims gone and changed nothing.
    at, later = (f"{moment:%Y-%m-%d %H:%M:%S.%f}" for moment in (now, late))
    assert clinic.rows("SELECT id, status, provider_id, sent_at FROM message "
                       "WHERE step = 'first_48h' ORDER BY id") == [
        (message_id, "sent", f"scripted-{message_id}" if message_id == 1
         else f"console-{message_id}", at if message_id == 1 else later)
        for (message_id,) in clinic.rows("SELECT id FROM message WHERE step = 'first_48h' "
                                         "ORDER BY id")]


def test_the_send_time_check_agrees_with_the_whole_plan(clinic: Clinic) -> None:
    # `why_unwanted` asks the plan's rule for the message's own step only: it must judge
    # every row as the course's whole plan would, whatever the step's anchor, on the
    # course's sessions read either way.
    for ref, treatment, booked in (("A1", "cellulite", True), ("B1", "hyaluronic-acid", False),
                                   ("C1", "cellulite", False)):
        clinic.json("patient", "add", "--name", "Ana Diaz", "--phone", "+12125550126",
                    "--email", "ana@example.com", "--ref", ref)
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", ref, "--treatment", treatment,
                    "--session-at", "2026-03-02T10:30",
                    *(["--next-session-at", "2026-03-16T10:30"] if booked else []))
    # Changes the plan did not see: consent to SMS withdrawn, a session booked elsewhere.
    clinic.rows("UPDATE patient SET channels = 'email' WHERE ref = 'A1'")
    clinic.rows("INSERT INTO session (course_id, number, number_fixed, at, moves, status, "
                "created_at) VALUES (2, 2, FALSE, '2026-04-06 14:30:00', 0, 'booked', "
                "'2026-03-20 15:00:00')")
    app = clinic.app(clock=FixedClock(SESSION + timedelta(days=3)))
    planner = app.planner()
    judged: list[bool] = []
    with app.db() as db:
        messages = db.exec(select(Message)).all()
        assert {m.step for m in messages} >= {"first_48h", "session_reminder", "rebook",
                                              "maintenance"}
        for message in messages:
            patient, course = db.get(Patient, message.patient_id), db.get(Course, message.course_id)
            session = db.get(Session, message.session_id)
            assert patient is not None and course is not None and session is not None
            plan = {(w.session.id, w.step.key, w.occurrence, w.channel) for w in _wanted(
                planner, app.protocols.get(course.treatment), course, patient,
                sessions_of(db, course))}
            wanted = (message.session_id, message.step, message.occurrence,
                      message.channel) in plan
            reason = why_unwanted(db, planner, message, patient, course, session)
            assert (reason is None) == wanted, (message.step, message.channel, reason)
            # The same verdict on the sessions as a group of messages reads them.
            rows = sessions_of_courses(db, [course.id or 0])[course.id or 0]
            row = next(r for r in rows if r.id == session.id)
            assert why_unwanted(db, planner, message, patient, course, row,
                                sessions=rows) == reason
            judged.append(wanted)
    assert any(judged) and not all(judged)


def test_one_row_that_cannot_be_settled_does_not_hold_up_the_others(
        clinic: Clinic, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery caught only SendError: any other error on one stale row (its database
    # write, the provider's client) ended the round and left every row after it stuck.
    _due_for(clinic, 2)
    now = SESSION + timedelta(hours=1)
    dead = _app(clinic, FixedClock(now)).dispatcher()
    claimed = sorted(claim.message_id for claim in dead.claim(10))  # then the sender dies
    assert len(claimed) >= 2
    recovery = _app(clinic, FixedClock(now)).dispatcher()
    asked = recovery._already_sent

    def broken_for_the_first(message: Message, patient: Patient) -> str | None:
        if message.id == claimed[0]:
            raise RuntimeError("the provider's client broke")
        return asked(message, patient)

    monkeypatch.setattr(recovery, "_already_sent", broken_for_the_first)
    assert recover_at(recovery, now + timedelta(seconds=400)) == len(claimed) - 1
    assert clinic.rows(f"SELECT status FROM message WHERE id = {claimed[0]}") == [("sending",)]
    requeued = [i for (i,) in clinic.rows("SELECT id FROM message WHERE status = 'pending' "
                                          "AND attempts = 1 ORDER BY id")]
    assert requeued == claimed[1:]


def test_claims_waiting_for_a_worker_are_renewed_every_quarter_lease(clinic: Clinic) -> None:
    # Behind a rate shared with other daemons a claim can wait in the pass longer than its
    # lease; unrenewed, another sender's recovery took it and spent an attempt on nothing.
    _due_for(clinic, 6)
    now = SESSION + timedelta(hours=1)
    clock = FixedClock(now)
    in_flight, release = threading.Semaphore(0), threading.Event()

    class Busy(ScriptedChannel):
        concurrency = 2

        def send(self, message: Outgoing) -> str:
            in_flight.release()
            release.wait(20)
            return super().send(message)

    sms = Busy("sms")
    dispatcher = _app(clinic, clock, sms=sms).dispatcher()
    passing = threading.Thread(target=dispatcher.run_once, daemon=True)
    passing.start()
    try:
        for _ in range(2):  # both workers busy, four SMS waiting for them
            assert in_flight.acquire(timeout=20)
        later = now + timedelta(seconds=80)  # past a quarter of the 300 s lease
        clock.now = later
        stamp = f"{later:%Y-%m-%d %H:%M:%S.%f}"
        deadline = datetime.now() + timedelta(seconds=20)
        while clinic.count(f"message WHERE channel = 'sms' AND status = 'sending' "
                           f"AND claimed_at = '{stamp}'") < 4:
            assert datetime.now() < deadline, "the waiting claims were not renewed"
            threading.Event().wait(0.05)
    finally:
        release.set()
        passing.join(20)
    assert not passing.is_alive()
    assert sorted(m.patient_id or 0 for m in sms.sent) == [1, 2, 3, 4, 5, 6]
    assert clinic.count("message WHERE channel = 'sms' AND step = 'first_48h' "
                        "AND status = 'sent'") == 6
