"""Soak and multi-sender runs: a clinic on a real database, `aftercare` processes, checks on the end state.

Used by test_crash_soak.py, test_many_senders.py and bench/crash_soak.py. Everything goes through the CLI
(`aftercare init`, `import`, `run`, `send-due`...) as separate processes; the database is only read here.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, func
from sqlalchemy.pool import NullPool
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.models import Message, MessageStatus, Patient, Session, SessionStatus

if TYPE_CHECKING:
    from fakes.twilio import FakeTwilio

CLINIC_NUMBER = "+12125550100"
COLUMNS = ("ref", "name", "phone", "email", "timezone", "locale", "channels", "treatment", "area",
           "session_at", "session_number", "next_session_at")
# 10,000 fictional numbers (555 exchange) per area code: patient `index` gets one of its own.
AREA_CODES = ("212", "646", "718", "917", "347", "929", "310", "213", "415", "628")
# A cellulite session this long ago has two SMS due now and nothing else: first_48h (1 h after)
# and arnica (4 h after), both valid for 16 h; the next step is the next day at 10:00.
TWO_DUE_AGO = timedelta(hours=4, minutes=5)
ONE_DUE_AGO = timedelta(hours=1, minutes=5)  # first_48h is due; arnica comes in three hours
WAIT_SECONDS = 120.0  # the longest wait for any awaited effect; each ends as soon as it is seen
ADOPTED = "adopted after an interrupted send"  # last_error of a row recovery adopted
# Lock trouble, in any process's output: deadlocks, serialization failures, "database is locked".
LOCK_TROUBLE = re.compile(r"deadlock|could not serialize|\block", re.IGNORECASE)


def phone(index: int) -> str:
    """Patient `index`'s own mobile number (E.164)."""
    return f"+1{AREA_CODES[index // 10_000]}555{index % 10_000:04d}"


def write_sessions(path: Path, indexes: range, session_at: datetime, *, timezone: str,
                   next_session_at: Callable[[int], datetime | None] = lambda _: None) -> Path:
    """A CSV for `aftercare import` (docs/import.md): a completed cellulite session per patient, SMS only."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for index in indexes:
            booked = next_session_at(index)
            writer.writerow([f"S{index}", f"Pat{index} Soak", phone(index), "", timezone, "", "sms",
                             "cellulite", "thighs", session_at.isoformat(timespec="seconds"), "1",
                             booked.isoformat(timespec="seconds") if booked else ""])
    return path


def config_text(url: str, fake_url: str, *, timeout: float = 0.5, rate: float = 1000, lease: int = 30,
                max_attempts: int = 10) -> str:
    """A clinic config: SMS through the fake Twilio at `fake_url`, quick retries, a short lease."""
    return f"""\
[clinic]
name = "Lumiere Aesthetics"
phone = "+1 212 555 0100"
email = "care@lumiere.example"
emergency_number = "911"
timezone = "America/New_York"
country = "US"

[database]
url = "{url}"

[sms]
provider = "twilio"
from = "{CLINIC_NUMBER}"
api_base_url = "{fake_url}"
timeout_seconds = {timeout}
rate_per_second = {rate}
max_attempts = {max_attempts}
# Receipts would come by webhook: the daemons do not poll the fake for them.
inbound = "webhook"

[email]
timeout_seconds = 1

[web]
public_url = "https://aftercare.clinic.example"

[daemon]
poll_seconds = 0.2
lease_seconds = {lease}
retry_base_seconds = 0.2
retry_max_seconds = 2
"""


@dataclass(frozen=True)
class Row:
    """One message row as the checks read it."""

    id: int
    status: str
    step: str
    provider_id: str | None
    last_error: str | None
    body: str | None
    phone: str | None
    ref: str | None


@dataclass
class Daemon:
    """One `aftercare run` process; its stdout and stderr go to `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    _handle: IO[bytes]

    def kill(self) -> None:
        """SIGKILL: no handler runs, the send in flight is cut wherever it is."""
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT_SECONDS)
        self._handle.close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean stop (SIGKILL after WAIT_SECONDS); its exit status."""
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(WAIT_SECONDS)
        finally:
            self.kill()
        return status

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def started(self) -> bool:
        """Whether it logged its start: its signal handlers are in place."""
        return "daemon started" in self.output()


@dataclass
class SoakClinic:
    """A clinic folder whose config sends SMS through a fake Twilio, driven by `aftercare` processes."""

    folder: Path
    config: Path
    url: str
    env: dict[str, str]
    daemons: list[Daemon] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # stdout + stderr of every CLI run
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """An engine on the clinic's database, for the checks' reads (no pooled connections)."""
        if self._engine is None:
            self._engine = create_engine(self.url, poolclass=NullPool)
        return self._engine

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `aftercare ARGS` as a process; with `check`, fail on a non-zero exit."""
        done = subprocess.run([sys.executable, "-m", "aftercare", *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=WAIT_SECONDS)
        self.outputs.append(f"$ aftercare {' '.join(args)}\n{done.stdout}{done.stderr}")
        if check:
            assert done.returncode == 0, self.outputs[-1]
        return done

    def start_daemon(self, name: str) -> Daemon:
        """Start `aftercare run`; `close()` kills whatever is still running."""
        log = self.folder / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "aftercare", "run"], cwd=self.folder, env=self.env,
                                stdout=handle, stderr=subprocess.STDOUT)
        daemon = Daemon(name, proc, log, handle)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        """Kill every daemon still running."""
        for daemon in self.daemons:
            daemon.kill()
        if self._engine is not None:
            self._engine.dispose()

    def all_output(self) -> str:
        """Every CLI run's and every daemon's output, for failure messages and log checks."""
        return "\n".join([*self.outputs, *(f"--- {d.name}\n{d.output()}" for d in self.daemons)])

    # -- reading the database

    def statuses(self) -> Counter[str]:
        """How many messages are in each status."""
        with DbSession(self.engine) as db:
            rows = db.exec(select(Message.status, func.count()).group_by(col(Message.status))).all()
        return Counter({status: count for status, count in rows})

    def count(self, status: str, *, planned_by: datetime | None = None) -> int:
        """Rows in `status` (planned to go by `planned_by`, when given)."""
        query = select(func.count()).select_from(Message).where(col(Message.status) == status)
        if planned_by is not None:
            query = query.where(col(Message.planned_at) <= planned_by)
        with DbSession(self.engine) as db:
            return db.exec(query).one()

    def newest_claim(self) -> datetime | None:
        """When the newest claim still in `sending` was taken (None: no row is in sending)."""
        query = select(func.max(Message.claimed_at)).where(col(Message.status) == MessageStatus.SENDING)
        with DbSession(self.engine) as db:
            return db.exec(query).one()

    def rows(self, *, due_by: datetime | None = None) -> list[Row]:
        """Every message row (planned to go by `due_by` when given), with its patient's phone and ref."""
        query = select(Message, Patient.phone, Patient.ref).join(
            Patient, col(Patient.id) == Message.patient_id)
        if due_by is not None:
            query = query.where(col(Message.planned_at) <= due_by)
        with DbSession(self.engine) as db:
            found = db.exec(query.order_by(col(Message.id))).all()
        return [Row(m.id or 0, m.status, m.step, m.provider_id, m.last_error, m.body, number, ref)
                for m, number, ref in found]

    def booked_sessions(self) -> list[tuple[int, datetime, int]]:
        """(id, at, moves) of every booked session, in id order."""
        query = select(Session.id, Session.at, Session.moves).where(
            col(Session.status) == SessionStatus.BOOKED).order_by(col(Session.id))
        with DbSession(self.engine) as db:
            return [(id_ or 0, at, moves) for id_, at, moves in db.exec(query).all()]

    def sessions(self) -> Counter[str]:
        """How many sessions are in each status."""
        with DbSession(self.engine) as db:
            rows = db.exec(select(Session.status, func.count()).group_by(col(Session.status))).all()
        return Counter({status: count for status, count in rows})

    def wait_for(self, predicate: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
        """Poll `predicate` until it holds; fail naming `what`, with every process's output."""
        end = time.monotonic() + seconds
        while not predicate():
            dead = [d.name for d in self.daemons if d.proc.poll() not in (None, -signal.SIGKILL, 0)]
            if dead or time.monotonic() > end:
                raise AssertionError(f"gave up waiting for {what} (crashed daemons: {dead}); "
                                     f"statuses {dict(self.statuses())}\n{self.all_output()[-5000:]}")
            time.sleep(0.05)


@contextmanager
def soak_clinic(folder: Path, url: str, fake: FakeTwilio, **config: Any) -> Iterator[SoakClinic]:
    """A clinic in `folder` on the database at `url`, initialised with `aftercare init`; every process it
    started is killed on the way out."""
    path = folder / "aftercare.toml"
    path.write_text(config_text(url, fake.url, **config), encoding="utf-8")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AFTERCARE_", "TWILIO_"))}
    env.update(AFTERCARE_CONFIG=str(path), TWILIO_ACCOUNT_SID=fake.account_sid,
               TWILIO_AUTH_TOKEN=fake.auth_token)
    clinic = SoakClinic(folder, path, url, env)
    try:
        clinic.cli("init")
        yield clinic
    finally:
        clinic.close()


def exactly_once_problems(rows: list[Row], fake: FakeTwilio) -> list[str]:
    """How `rows` (settled messages) and what `fake` accepted disagree with "each SMS sent exactly once".

    Every row is sent or failed with its reason; every sent row's provider_id is one the fake issued, for
    that row's number and text; no (To, Body) reached the fake twice; the fake accepted nothing that is
    not a sent row (a message the patient got but the database does not know as sent).
    """
    problems: list[str] = []
    by_sid = {m["sid"]: (m["to"], m["body"]) for m in fake.created}
    problems += [f"the fake accepted {key} {count} times" for key, count in fake.duplicates().items()]
    sent_ids = Counter(row.provider_id for row in rows if row.status == MessageStatus.SENT)
    problems += [f"provider id {sid} on {count} rows" for sid, count in sent_ids.items() if count > 1]
    for row in rows:
        if row.status == MessageStatus.SENT:
            if by_sid.get(row.provider_id or "") != (row.phone, row.body):
                problems.append(f"message {row.id} is sent as {row.provider_id}, which the fake did not "
                                f"accept for its number and text")
        elif row.status == MessageStatus.FAILED:
            if not row.last_error:
                problems.append(f"message {row.id} failed without a reason")
        else:
            problems.append(f"message {row.id} ({row.step}) is {row.status}, not sent or failed")
    accepted = Counter((to, body) for to, body in by_sid.values())
    sent = Counter((row.phone, row.body) for row in rows if row.status == MessageStatus.SENT)
    problems += [f"the fake accepted {key}, which no sent row is" for key in accepted if key not in sent]
    return problems


def kill_at_random(clinic: SoakClinic, rng: random.Random, kills: int, *, most_seconds: float,
                   planned_by: datetime) -> int:
    """Start `aftercare run` and SIGKILL it at a random moment (up to `most_seconds`) after its first
    claim, `kills` times or until nothing planned by `planned_by` is pending; how many were killed."""
    killed = 0
    while killed < kills and clinic.count(MessageStatus.PENDING, planned_by=planned_by):
        before = clinic.statuses()
        daemon = clinic.start_daemon(f"killed-{killed + 1}")

        def claimed(before: Counter[str] = before) -> bool:
            return clinic.statuses() != before

        clinic.wait_for(claimed, f"daemon {killed + 1} to claim messages")
        time.sleep(rng.uniform(0, most_seconds))  # the random moment itself: nothing to poll for
        daemon.kill()
        killed += 1
    return killed


def drain(clinic: SoakClinic, name: str, planned_by: datetime) -> None:
    """Run a daemon until nothing planned by `planned_by` is pending, then stop it with SIGTERM."""
    daemon = clinic.start_daemon(name)
    clinic.wait_for(daemon.started, f"{name} to start")  # SIGTERM before that ends it unhandled
    clinic.wait_for(lambda: clinic.count(MessageStatus.PENDING, planned_by=planned_by) == 0,
                    f"{name} to send everything pending")
    status = daemon.stop()
    assert status == 0, f"{name} did not stop cleanly (exit status {status}):\n{daemon.output()}"


def logged_sends(output: str) -> int:
    """The messages a daemon's log says it sent (its `dispatch: sent=N` lines)."""
    return sum(int(n) for n in re.findall(r"dispatch: sent=(\d+)", output))
