"""Health and Prometheus metrics: what an admin's monitoring asks the service.

Counters and the latency histogram count what this process did (sends, replies, notices);
the queue's gauges are read from the database at scrape time, so every process reports the
same queue. None of them carries patient data: labels are channels, outcomes and statuses.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from aftercare.clock import Clock, as_utc
from aftercare.models import Message, MessageStatus, Reply, ReplyStatus, TriageLevel

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from aftercare.app import App
    from aftercare.channels import Channel, Outgoing

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Slack on top of three poll intervals and the longest send before the sender counts as
# stalled.
STALL_SLACK_SECONDS = 30.0


@dataclass
class Tally:
    """This process's counters and send latencies, in plain Python: sending and storing a
    reply never load prometheus_client (the CLI starts faster); a scrape converts them."""

    sends: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    replies: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    notices: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    # channel -> (count per bucket, not cumulative; the last one is +Inf), sum of seconds
    latency: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, channel: str, seconds: float) -> None:
        with self.lock:
            buckets, total = self.latency.setdefault(
                channel, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0]))
            index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound),
                         len(LATENCY_BUCKETS))
            buckets[index] += 1
            total[0] += seconds

    def add(self, counter: dict[Any, int], key: Any) -> None:
        with self.lock:
            counter[key] += 1


# One per process: counters count what this process did, whichever app it served.
TALLY = Tally()


def timed_send(channel: Channel, outgoing: Outgoing) -> str:
    """`channel.send(outgoing)`, its duration observed whatever the outcome."""
    started = time.perf_counter()
    try:
        return channel.send(outgoing)
    finally:
        TALLY.observe(outgoing.channel, time.perf_counter() - started)


def count_send(channel: str, outcome: str | None) -> None:
    """One provider call's recorded outcome (None: the claim was taken over, not counted)."""
    if outcome is not None:
        TALLY.add(TALLY.sends, (channel, outcome))


def count_reply(keyword: str | None) -> None:
    """A patient's reply stored for the first time."""
    TALLY.add(TALLY.replies, keyword or "none")


def count_notice(kind: str, outcome: str) -> None:
    """A notice (alert, escalation, staff reply) sent or tried."""
    TALLY.add(TALLY.notices, (kind, outcome))


@dataclass
class Heartbeat:
    """When the sender last showed progress: a dispatch pass started, moved on or ended."""

    clock: Clock
    stall_after: float  # seconds without progress after which the scheduler counts as stalled
    last: datetime | None = None
    passes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def for_app(cls, app: App) -> Heartbeat:
        settings = app.settings
        return cls(app.clock, 3 * settings.daemon.poll_seconds + settings.longest_send_seconds
                   + STALL_SLACK_SECONDS, last=app.clock())

    def beat(self, *, finished: bool = False) -> None:
        with self._lock:
            self.last = self.clock()
            self.passes += finished

    def watch(self, stop: threading.Event) -> threading.Event:
        """`stop`, seen through an event that beats whenever the pass checks it (between
        messages), so a long pass through a backlog still shows progress."""
        return _Beating(stop, self)

    def age(self) -> float | None:
        """Seconds since the last sign of progress."""
        last = self.last
        return None if last is None else max(0.0, (self.clock() - last).total_seconds())

    def stalled(self) -> bool:
        age = self.age()
        return age is None or age > self.stall_after


class _Beating(threading.Event):
    """A view of another event whose every check is a heartbeat."""

    def __init__(self, inner: threading.Event, heartbeat: Heartbeat) -> None:
        super().__init__()
        self._inner, self._heartbeat = inner, heartbeat

    def is_set(self) -> bool:
        self._heartbeat.beat()
        return self._inner.is_set()

    def set(self) -> None:
        self._inner.set()

    def clear(self) -> None:
        self._inner.clear()

    def wait(self, timeout: float | None = None) -> bool:
        self._heartbeat.beat()
        return self._inner.wait(timeout)


@dataclass(frozen=True)
class QueueState:
    """The queue as one scrape sees it: two cheap queries on the status index, and one on
    replies."""

    by_status: dict[str, int]
    oldest_overdue: float  # seconds; 0 when nothing due is waiting
    urgent_open: int
    oldest_urgent: float  # seconds; 0 when no urgent reply waits


def read_queue(app: App) -> QueueState:
    """Queue depth by status, the oldest due message still pending, urgent replies open."""
    now = app.clock()
    with DbSession(app.engine) as db:
        # GROUP BY and MIN both walk the (status, send_after) index, not the table.
        counts = dict(db.exec(select(Message.status, func.count())
                              .group_by(col(Message.status))).all())
        oldest = db.exec(select(func.min(Message.send_after)).where(
            Message.status == MessageStatus.PENDING, Message.send_after <= now)).one()
        urgent, first_urgent = db.exec(
            select(func.count(), func.min(Reply.received_at))
            .where(Reply.status == ReplyStatus.OPEN, Reply.triage == TriageLevel.URGENT)).one()
    by_status = {status.value: 0 for status in MessageStatus}
    by_status.update({str(status): int(count) for status, count in counts.items()})
    return QueueState(by_status, _seconds_since(now, oldest), int(urgent),
                      _seconds_since(now, first_urgent))


def _seconds_since(now: datetime, then: datetime | None) -> float:
    # MIN() over a custom column type comes back raw (a string on SQLite).
    if then is None:
        return 0.0
    moment = then if isinstance(then, datetime) else datetime.fromisoformat(str(then))
    return max(0.0, (now - as_utc(moment)).total_seconds())


class QueueCollector:
    """The tallies, and gauges computed from the database at each scrape (a prometheus_client
    Collector by duck typing, so that this module imports it only when scraped)."""

    def __init__(self, app: App, heartbeat: Heartbeat | None) -> None:
        self.app, self.heartbeat = app, heartbeat

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with TALLY.lock:
            sends, replies = dict(TALLY.sends), dict(TALLY.replies)
            notices = dict(TALLY.notices)
            latency = {channel: (list(buckets), total[0])
                       for channel, (buckets, total) in TALLY.latency.items()}
        family = CounterMetricFamily("aftercare_sends", "Provider calls for planned messages, "
                                     "by channel and outcome (sent, retrying, failed).",
                                     labels=["channel", "outcome"])
        for (channel, outcome), count in sorted(sends.items()):
            family.add_metric([channel, outcome], count)
        yield family
        histogram = HistogramMetricFamily("aftercare_send_seconds", "How long one provider "
                                          "call took (Twilio's API request, the SMTP "
                                          "exchange), by channel.", labels=["channel"])
        for channel, (buckets, total) in sorted(latency.items()):
            cumulative, running = [], 0
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], buckets,
                                    strict=True):
                running += count
                cumulative.append((bound, running))
            histogram.add_metric([channel], cumulative, total)
        yield histogram
        family = CounterMetricFamily("aftercare_replies_received", "Patients' replies "
                                     "stored, by keyword (stop, start, help, none).",
                                     labels=["keyword"])
        for keyword, count in sorted(replies.items()):
            family.add_metric([keyword], count)
        yield family
        family = CounterMetricFamily("aftercare_notices", "Notices sent or tried (alerts to "
                                     "the on-call contact, escalations, staff replies), by "
                                     "kind and outcome.", labels=["kind", "outcome"])
        for (kind, outcome), count in sorted(notices.items()):
            family.add_metric([kind, outcome], count)
        yield family

        up = GaugeMetricFamily("aftercare_database_up",
                               "1 if the database answered this scrape, else 0.")
        try:
            state = read_queue(self.app)
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreachable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            depth = GaugeMetricFamily("aftercare_messages", "Planned messages by status.",
                                      labels=["status"])
            for status, count in sorted(state.by_status.items()):
                depth.add_metric([status], count)
            yield depth
            yield GaugeMetricFamily("aftercare_oldest_overdue_seconds",
                                    "Age of the oldest message due but still pending "
                                    "(0 when none).", value=state.oldest_overdue)
            yield GaugeMetricFamily("aftercare_urgent_replies_open",
                                    "Urgent replies nobody has acknowledged yet.",
                                    value=state.urgent_open)
            yield GaugeMetricFamily("aftercare_oldest_urgent_reply_seconds",
                                    "Age of the oldest urgent reply nobody has acknowledged "
                                    "(0 when none).", value=state.oldest_urgent)
        if self.heartbeat is not None:
            age = self.heartbeat.age()
            yield GaugeMetricFamily("aftercare_last_dispatch_seconds",
                                    "Seconds since this process's sender last showed "
                                    "progress.", value=-1 if age is None else age)


def registry_for(app: App, heartbeat: Heartbeat | None) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one: tests build many apps in
    one process) holding this process's tallies and `app`'s queue."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(cast(Collector, QueueCollector(app, heartbeat)))
    return registry


def metrics_page(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def health(app: App, heartbeat: Heartbeat | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and a small JSON body: 200 when the database answers and the sender
    (if this process runs one) is making progress, 503 with the reasons otherwise."""
    problems: list[str] = []
    body: dict[str, Any] = {}
    try:
        state = read_queue(app)
        body["database"] = "ok"
        body["oldest_overdue_seconds"] = round(state.oldest_overdue, 1)
    except SQLAlchemyError as exc:
        body["database"] = "unreachable"
        problems.append(f"database unreachable ({type(exc).__name__})")
    if heartbeat is not None:
        age = heartbeat.age()
        body["last_dispatch_seconds"] = None if age is None else round(age, 1)
        if heartbeat.stalled():
            body["scheduler"] = "stalled"
            problems.append(f"no dispatch progress for {age or 0:.0f}s "
                            f"(limit {heartbeat.stall_after:.0f}s)")
        else:
            body["scheduler"] = "ok"
    body["status"] = "unhealthy" if problems else "ok"
    if problems:
        body["problems"] = problems
    return (503 if problems else 200), body


def health_json(body: dict[str, Any]) -> bytes:
    """The body of /healthz, keys sorted so every answer reads the same."""
    return (json.dumps(body, sort_keys=True) + "\n").encode()


def wsgi_app(app: App, heartbeat: Heartbeat | None) -> Callable[..., Iterable[bytes]]:
    """`/healthz` and `/metrics` for `aftercare run --metrics-port`, as a WSGI application."""
    registry = registry_for(app, heartbeat)

    def application(environ: dict[str, Any],
                    start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status, ctype, payload = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/healthz":
            code, body = health(app, heartbeat)
            status = "200 OK" if code == 200 else "503 Service Unavailable"
            ctype, payload = "application/json", health_json(body)
        elif path == "/metrics":
            payload, ctype = metrics_page(registry)
            status = "200 OK"
        else:
            status, ctype, payload = "404 Not Found", "text/plain", b"/healthz or /metrics\n"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))])
        return [payload]

    return application


def serve_in_thread(app: App, heartbeat: Heartbeat | None, port: int,
                    host: str = "127.0.0.1") -> WSGIServer:
    """Serve `/healthz` and `/metrics` on host:port from a daemon thread; `shutdown()` stops
    it. Raises OSError when the port is taken."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # no line per scrape

    server = make_server(host, port, wsgi_app(app, heartbeat), ThreadingWSGIServer,
                         handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
