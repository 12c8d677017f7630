"""Pacing sends to a provider account's rate: the one rule, kept in this process or shared
through the database by every sender on it.

The rule: a send that costs `cost` (an SMS: its segments) takes the next free slot, which
starts at `max(now, free_at)` and frees the next one `cost / rate` seconds later. The
provider then never gets more than `rate` a second, and idle time is never saved up for a
burst.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the database is imported only by the shared pace, when it is built
    from sqlalchemy import Engine
    from sqlmodel import Session as DbSession


def slot_seconds(cost: float, rate: float) -> float:
    """How long a send of `cost` holds the pace: `cost / rate`, rounded up to the
    microsecond (a stored time's resolution), so rounding never speeds it up."""
    return math.ceil(cost / rate * 1_000_000) / 1_000_000


class Pace(ABC):
    """One channel's rate: `reserve` takes a send's slot, `pause` sleeps until it starts."""

    rate: float

    def __init__(self, rate: float, sleep: Callable[[float], None] | None) -> None:
        if rate <= 0:
            raise ValueError("a pace needs a rate above 0")
        self.rate = rate
        self._sleep = sleep  # None: really sleep (and wake early when the caller stops)

    @abstractmethod
    def reserve(self, cost: float = 1.0, db: DbSession | None = None) -> float:
        """Take the next slot for `cost`; the seconds until it starts. `db`: take it in the
        caller's transaction (the shared pace; this process's own ignores it)."""

    def pause(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Sleep `seconds`; a real sleep ends early once `stop` is set."""
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def wait(self, cost: float = 1.0) -> float:
        """Block until a slot for `cost` starts; how long that took."""
        seconds = self.reserve(cost)
        self.pause(seconds)
        return seconds


class RateLimiter(Pace):
    """This process's own pace (monotonic clock): for a channel used without a database."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(per_second, sleep)
        self._clock = clock
        self._next: float | None = None
        self._lock = threading.Lock()

    def reserve(self, cost: float = 1.0, db: DbSession | None = None) -> float:
        with self._lock:
            now = self._clock()
            start = now if self._next is None else max(now, self._next)
            self._next = start + slot_seconds(cost, self.rate)
        return start - now


def wall_clock() -> datetime:
    """The real time, UTC: what every process on the database shares (never the app's
    clock, which `--now` may set)."""
    return datetime.now(UTC)


class SharedPace(Pace):
    """The pace of a provider account, in the database (table sendpace, one row per
    channel): every sender on it, in every process, takes its slots from the same row, so
    together they keep the account's rate. Uses the wall clock: keep the hosts' clocks in
    sync (NTP), or one host's skew turns into a short burst."""

    def __init__(self, engine: Engine, name: str, rate: float, *,
                 clock: Callable[[], datetime] = wall_clock,
                 sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(rate, sleep)
        self.engine, self.name, self._clock = engine, name, clock

    def reserve(self, cost: float = 1.0, db: DbSession | None = None) -> float:
        if db is not None:
            return self._take(db, cost)
        from sqlmodel import Session as DbSession

        with DbSession(self.engine) as own:
            seconds = self._take(own, cost)
            own.commit()
        return seconds

    def _take(self, db: DbSession, cost: float) -> float:
        """Lock the channel's row, take the slot, move the row on; the caller commits."""
        from sqlalchemy import update
        from sqlmodel import col, select

        from aftercare.models import SendPace

        # FOR UPDATE on PostgreSQL: senders take slots one after the other. (SQLite's
        # transactions already hold the write lock from their start: BEGIN IMMEDIATE.)
        query = select(SendPace.next_at).where(col(SendPace.name) == self.name).with_for_update()
        free_at = db.exec(query).first()
        if free_at is None:
            _create_row(db, self.name, self._clock())
            free_at = db.exec(query).one()
        now = self._clock()  # read once the row is ours: the slot is judged at this moment
        start = max(now, free_at)
        db.exec(update(SendPace).where(col(SendPace.name) == self.name)
                .values(next_at=start + timedelta(seconds=slot_seconds(cost, self.rate))))
        return (start - now).total_seconds()


def _create_row(db: DbSession, name: str, now: datetime) -> None:
    """The channel's row, unless another sender just made it (first use of the database)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from aftercare.models import SendPace

    # ON CONFLICT DO NOTHING: of two first senders, the second waits for the first's row
    # instead of failing (PostgreSQL) - the two databases aftercare supports.
    dialect = db.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.exec(insert(SendPace).values(name=name, next_at=now)
            .on_conflict_do_nothing(index_elements=["name"]))
