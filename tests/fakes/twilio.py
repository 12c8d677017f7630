"""A fake Twilio REST server (Messages resource only) that validates requests against Twilio's API contract.

It creates, lists and fetches messages; tests add incoming messages with ``receive`` and play the carrier
with ``set_status`` (what a delivery receipt would say), both then visible to list and fetch.

The real ``twilio`` client talks to it over HTTP once pointed at it with ``client.api.base_url = fake.url``
(or ``fake.attach(client)``); every request is checked against the table in twilio_contract.py, copied from
Twilio's OpenAPI spec. The fake never reads the spec; a test compares the two if ../shared/twilio-oai exists.

``inject(Faults(...))`` fails a seeded fraction of creates (500, 429, an answer later than the client waits
after accepting, the connection dropped before or after accepting); ``sent_counts`` and ``duplicates`` tell
whether any (To, Body) reached the fake twice.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import email.utils
import functools
import json
import math
import operator
import random
import re
import secrets
import socketserver
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import twilio_contract

if TYPE_CHECKING:
    from twilio.rest import Client

MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
# One message (fetch). Its Sid path parameter has the pattern of the message's sid property (the spec's
# fetch operation declares no query parameters).
MESSAGE_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
MESSAGE_SCHEMA = "api.v2010.account.message"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ERROR_DOCS = "https://www.twilio.com/docs/errors/{code}"

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_CHANNEL_ADDRESS = re.compile(r"[a-z][a-z0-9-]*:\S+")
_SHORT_CODE = re.compile(r"\d{3,8}")
_ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
# GSM 03.38 basic character set and the extension table (extension characters cost two septets).
_GSM_BASIC = frozenset(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1\u00dc\u00a7"
    "\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|\u20ac\f")


# ---------------------------------------------------------------------------------------------- the contract


# Only needed to check the table in twilio_contract.py against the spec (test_fake_twilio.py); CI has it.
SPEC_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "twilio-oai" / "twilio_api_v2010.json"
# The schema keywords the fake reads (_value_problems; nullable for the shape of returned messages). Schemas
# in a Contract keep only these, so the table and the spec compare equal; add a keyword when the fake uses it.
CONTRACT_KEYWORDS = (
    "type",
    "format",
    "nullable",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
)


@functools.cache
def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """Load Twilio's OpenAPI description; raise loudly when the shared checkout is missing."""
    if not path.is_file():
        raise RuntimeError(
            f"Twilio OpenAPI spec not found at {path}. Only the check of twilio_contract.py needs it: the "
            "shared data checkout next to the repository (../shared/twilio-oai/twilio_api_v2010.json)."
        )
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return spec


@dataclass(frozen=True)
class Contract:
    """The parts of the Messages API the fake enforces; every schema cut down to CONTRACT_KEYWORDS."""

    create_fields: dict[str, dict[str, Any]]  # form field -> schema (POST requestBody)
    create_required: tuple[str, ...]
    list_params: dict[str, dict[str, Any]]  # query parameter -> schema (GET)
    message_properties: dict[str, dict[str, Any]]  # property -> schema (api.v2010.account.message)
    list_keys: tuple[str, ...]  # properties of the list response

    @property
    def message_keys(self) -> tuple[str, ...]:
        """The keys of every message the fake returns, in the spec's order."""
        return tuple(self.message_properties)

    @property
    def status_enum(self) -> tuple[str, ...]:
        """The message statuses Twilio defines."""
        return tuple(self.message_properties["status"]["enum"])

    @classmethod
    def from_table(cls) -> Contract:
        """The contract as copied into twilio_contract.py (what the fake uses)."""
        table = twilio_contract
        return cls(  # copies, so a test that edits its contract cannot change the module's table
            create_fields=copy.deepcopy(table.CREATE_FIELDS),
            create_required=table.CREATE_REQUIRED,
            list_params=copy.deepcopy(table.LIST_PARAMS),
            message_properties=copy.deepcopy(table.MESSAGE_PROPERTIES),
            list_keys=table.LIST_KEYS,
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Contract:
        """Extract the Messages contract from a parsed spec."""
        path = spec["paths"][MESSAGES_PATH]
        body = path["post"]["requestBody"]["content"][FORM_CONTENT_TYPE]["schema"]
        listing = path["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        message = spec["components"]["schemas"][MESSAGE_SCHEMA]

        def schema(raw: dict[str, Any]) -> dict[str, Any]:
            return _enforced(_resolve(spec, raw))

        return cls(
            create_fields={name: schema(raw) for name, raw in body["properties"].items()},
            create_required=tuple(body.get("required", ())),
            list_params={
                p["name"]: schema(p.get("schema", {}))
                for p in path["get"]["parameters"]
                if p["in"] == "query"
            },
            message_properties={name: schema(raw) for name, raw in message["properties"].items()},
            list_keys=tuple(listing["properties"]),
        )


@functools.cache
def contract() -> Contract:
    """The Messages contract the fake enforces: the table in twilio_contract.py (cached)."""
    return Contract.from_table()


@functools.cache
def spec_contract(path: Path = SPEC_PATH) -> Contract:
    """The Messages contract extracted from the spec at ``path`` (cached); needs the shared checkout."""
    return Contract.from_spec(load_spec(path))


def contract_drift(table: Contract, spec: Contract) -> list[str]:
    """How ``table`` differs from ``spec``, one line per difference; empty when they agree."""
    found: list[str] = []
    for part in dataclasses.fields(Contract):  # every part, so a newly extracted one is compared too
        mine, theirs = getattr(table, part.name), getattr(spec, part.name)
        if isinstance(mine, dict):
            found += [f"{part.name}[{k!r}] is in the spec, not in the table" for k in theirs if k not in mine]
            found += [f"{part.name}[{k!r}] is in the table, not in the spec" for k in mine if k not in theirs]
            found += [
                f"{part.name}[{k!r}]: the table has {mine[k]}, the spec {theirs[k]}"
                for k in mine
                if k in theirs and mine[k] != theirs[k]
            ]
        elif mine != theirs:
            found.append(f"{part.name}: the table has {mine}, the spec {theirs}")
    return found


def _enforced(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with only the keywords the fake uses (CONTRACT_KEYWORDS, items, x-twilio.ignoreFormat)."""
    kept = {key: schema[key] for key in CONTRACT_KEYWORDS if key in schema}
    if "items" in schema:
        kept["items"] = _enforced(schema["items"])
    if schema.get("x-twilio", {}).get("ignoreFormat"):
        kept["x-twilio"] = {"ignoreFormat": True}
    return kept


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    if schema.get("type") == "array" and "items" in schema:
        schema = {**schema, "items": _resolve(spec, schema["items"])}
    return schema


def _value_problems(name: str, schema: dict[str, Any], value: str) -> list[str]:
    """Cheap checks of one scalar value against its schema: type, enum, pattern, length, range, format."""
    found: list[str] = []
    kind = schema.get("type")
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        return [f"{name}={value!r} is not an integer"]
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return [f"{name}={value!r} is not a number"]
    if kind == "boolean" and value not in ("true", "false"):
        found.append(f"{name}={value!r} is not a boolean (true/false)")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{name}={value!r} is not one of {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{name}={value!r} does not match {schema['pattern']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append(f"{name}={value!r} is shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append(f"{name}={value!r} is longer than {schema['maxLength']}")
    if kind in ("integer", "number"):
        number = float(value)
        if "minimum" in schema and number < schema["minimum"]:
            found.append(f"{name}={value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and number > schema["maximum"]:
            found.append(f"{name}={value} is above the maximum {schema['maximum']}")
    if schema.get("x-twilio", {}).get("ignoreFormat"):
        return found
    fmt = schema.get("format")
    if fmt == "uri":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(f"{name}={value!r} is not an absolute http(s) URI")
        elif "_" in parts.hostname:
            found.append(f"{name}={value!r}: Twilio does not allow underscores in the hostname")
    elif fmt == "phone-number" and not _is_address(name, value):
        found.append(f"{name}={value!r} is not an E.164 number or channel address")
    elif fmt == "date-time":
        try:
            _parse_when(value)
        except ValueError:
            found.append(f"{name}={value!r} is not a date or ISO 8601 date-time")
    return found


def _is_address(name: str, value: str) -> bool:
    if _E164.fullmatch(value) or _CHANNEL_ADDRESS.fullmatch(value):
        return True
    # Senders may also be short codes or alphanumeric sender IDs; recipients may not.
    is_sender = name in ("From", "FallbackFrom")
    return is_sender and bool(_SHORT_CODE.fullmatch(value) or _ALPHANUMERIC_SENDER.fullmatch(value))


def _parse_when(value: str) -> tuple[datetime, bool]:
    """Parse a DateSent-style value into (UTC datetime, date_only): YYYY-MM-DD, ISO 8601 or RFC 2822."""
    if _DATE_ONLY.fullmatch(value):
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC), True
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(value) from exc
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), False


def rfc2822(when: datetime) -> str:
    """Format a datetime the way Twilio does: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    return email.utils.format_datetime(when.astimezone(UTC).replace(microsecond=0))


def segments(body: str) -> int:
    """Number of SMS segments Twilio would bill for ``body`` (GSM-7 or UCS-2)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in body):
        units, single, multi = sum(2 if c in _GSM_EXTENSION else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


# ---------------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """How the fake answers one create: a canned reply (``body`` set) or the normal 201 after ``delay``."""

    status: int = 201
    body: bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's (legacy) JSON error body."""
    return {"code": code, "message": message, "more_info": ERROR_DOCS.format(code=code), "status": status}


def error(status: int, code: int, message: str) -> Outcome:
    """Answer with a Twilio JSON error body, e.g. ``error(400, 21211, "Invalid 'To' Phone Number")``."""
    return Outcome(status, json.dumps(error_body(status, code, message)).encode())


def rate_limited() -> Outcome:
    """429 Too Many Requests with Twilio code 20429."""
    return error(429, 20429, "Too Many Requests")


def server_error() -> Outcome:
    """500 with Twilio's JSON body (code 20500)."""
    return error(500, 20500, "An internal server error has occurred")


def bad_gateway_html() -> Outcome:
    """502 with an HTML page, as a load balancer in front of Twilio would send."""
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    return Outcome(502, page, "text/html")


def slow(seconds: float) -> Outcome:
    """Wait ``seconds`` (interruptible by stop()) and then accept the message and answer 201 normally."""
    return Outcome(delay=seconds)


# ---------------------------------------------------------------------------------------------- faults

SERVER_ERROR = "server_error"  # 500, Twilio's JSON body (code 20500); nothing stored
RATE_LIMITED = "rate_limited"  # 429, Twilio's JSON body (code 20429); nothing stored
SLOW_REPLY = "slow_reply"  # stored at once, answered 201 only after Faults.slow_seconds
DROP_BEFORE_STORE = "drop_before_store"  # connection closed without an answer; nothing stored
DROP_AFTER_STORE = "drop_after_store"  # stored, then the connection closed without an answer
FAULT_KINDS = (SERVER_ERROR, RATE_LIMITED, SLOW_REPLY, DROP_BEFORE_STORE, DROP_AFTER_STORE)


@dataclass(frozen=True)
class Faults:
    """Seeded random failures of valid creates: a ``rate`` fraction of them get one of ``kinds``.

    Scripted outcomes (``script``) come first and are never faulted. Which create gets which fault follows
    the order creates arrive in: the same seed and the same order give the same faults.
    """

    rate: float = 0.2
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 2.0  # how late a slow_reply answers: more than the client's timeout

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate={self.rate} is not a fraction between 0 and 1")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be some of {FAULT_KINDS}, not {self.kinds}")


# ---------------------------------------------------------------------------------------------- records


@dataclass
class Recorded:
    """One request as received; ``form``/``query`` keep the last value of each name, ``form_lists`` all."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    form_lists: dict[str, list[str]] = field(default_factory=dict)
    status: int | None = None  # the status the fake answered; None while pending or if it dropped the request
    fault: str | None = None  # the injected fault (one of FAULT_KINDS) this create got, if any


class _Abort(Exception):
    """Drop the connection without answering (the fake is stopping, or a drop fault)."""


# ---------------------------------------------------------------------------------------------- the server


class FakeTwilio:
    """A real HTTP server on 127.0.0.1 speaking the Messages part of Twilio's 2010-04-01 REST API."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        """Prepare (not start) the fake; ``clock`` stamps date_created/date_sent (default: now, UTC)."""
        self.contract = contract()
        self.account_sid: str = "AC" + secrets.token_hex(16)
        self.auth_token: str = secrets.token_hex(16)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.created: list[dict[str, Any]] = []  # accepted creates (outgoing), oldest first
        self.received: list[dict[str, Any]] = []  # incoming messages added by receive(), oldest first
        self._listed: list[dict[str, Any]] = []  # both, in the order they arrived: what list and fetch see
        self.requests: list[Recorded] = []
        self.problems: list[str] = []
        # hold: when not None, an accepted create waits for hold.set() before replying (stop() sets it)
        self.hold: threading.Event | None = None
        self.accepted_event = threading.Event()  # set on every accepted create; clear it yourself to reuse
        self._script: list[Outcome] = []
        self._faults: Faults | None = None
        self._fault_rng = random.Random(0)
        self.fault_counts: Counter[str] = Counter()  # injected faults by kind
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle

    @property
    def url(self) -> str:
        """Base URL to give the client (``client.api.base_url``); stable across down()/up()."""
        if not self._port:
            raise RuntimeError("FakeTwilio is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def messages_path(self) -> str:
        """The Messages list path for this fake's account."""
        return MESSAGES_PATH.format(AccountSid=self.account_sid)

    def start(self) -> None:
        """Bind 127.0.0.1 (a free port the first time) and serve from a daemon thread."""
        self._stopping.clear()
        self._listen()

    def stop(self) -> None:
        """Stop serving; releases held and slow requests first, so it never hangs."""
        self._stopping.set()
        if self.hold is not None:
            self.hold.set()
        self._close()

    def down(self) -> None:
        """Stop listening so connections are refused; the port (and url) is kept for up()."""
        self._close()

    def up(self) -> None:
        """Listen again on the same port after down()."""
        self._listen()

    def __enter__(self) -> FakeTwilio:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
        )
        self._thread.start()

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- scripting and inspection

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next valid creates, one per create; when empty, creates succeed."""
        with self._lock:
            self._script.extend(outcomes)

    def inject(self, faults: Faults | None) -> None:
        """Fault the creates that follow as ``faults`` says (its seed restarts the draw); None: no faults."""
        with self._lock:
            self._faults = faults
            self._fault_rng = random.Random(faults.seed if faults else 0)

    def sent_counts(self) -> Counter[tuple[str, str]]:
        """How many times each (To, Body) was accepted; a count above 1 is an SMS the patient got twice."""
        with self._lock:
            return Counter((m["to"], m["body"]) for m in self.created)

    def duplicates(self) -> dict[tuple[str, str], int]:
        """The (To, Body) pairs accepted more than once, with their counts; empty when none."""
        return {key: count for key, count in self.sent_counts().items() if count > 1}

    def issued_sids(self) -> set[str]:
        """The SIDs of every message this fake accepted (created)."""
        with self._lock:
            return {m["sid"] for m in self.created}

    def _draw_fault(self) -> str | None:
        """The fault for the next create, from the seeded draw (call with the lock held)."""
        faults = self._faults
        if faults is None or self._fault_rng.random() >= faults.rate:
            return None
        kind = self._fault_rng.choice(faults.kinds)
        self.fault_counts[kind] += 1
        return kind

    def attach(self, client: Client) -> Client:
        """Point a twilio ``Client`` at this fake (edge/region cleared: they would rewrite the URL)."""
        client.api.base_url = self.url
        client.edge = client.region = None
        return client

    def client(self, timeout: float | None = None) -> Client:
        """A real twilio ``Client`` with this fake's credentials, pointed at it."""
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        made = Client(self.account_sid, self.auth_token, http_client=TwilioHttpClient(timeout=timeout))
        return self.attach(made)

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        """Accepted messages whose ``to`` is ``number``, oldest first."""
        with self._lock:
            return [m for m in self.created if m["to"] == number]

    def receive(self, from_: str, to: str, body: str, at: datetime | None = None) -> str:
        """An SMS from ``from_`` reaches ``to`` (one of the account's numbers); returns its sid.

        It is listed and fetched like any message, as Twilio shows an incoming one: direction "inbound",
        status "received", date_sent ``at`` (default: the fake's clock).
        """
        for name, number in (("from_", from_), ("to", to)):
            if not _E164.fullmatch(number):
                raise ValueError(f"{name}={number!r} is not an E.164 number")
        when = rfc2822(at or self.clock())
        sid = "SM" + secrets.token_hex(16)
        known: dict[str, Any] = {
            **self._common(sid, when),
            "body": body,
            "direction": "inbound",
            "from": from_,
            "num_media": "0",
            "num_segments": str(segments(body)),
            "status": "received",
            "to": to,
        }
        message = {key: known.get(key) for key in self.contract.message_keys}
        with self._changed:
            self.received.append(message)
            self._listed.append(message)
            self._changed.notify_all()
        return sid

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """Change a message's status and error code, as a carrier's report would; list and fetch show it."""
        if status not in self.contract.status_enum:
            raise ValueError(f"{status!r} is not one of {self.contract.status_enum}")
        with self._changed:
            message = self._find(sid)
            if message is None:
                raise KeyError(f"no message {sid}")
            message["status"] = status
            message["error_code"] = error_code
            message["error_message"] = None  # Twilio deprecated it; error_code carries the reason
            message["date_updated"] = rfc2822(self.clock())
            self._changed.notify_all()

    def _find(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            return next((m for m in self._listed if m["sid"] == sid), None)

    def _common(self, sid: str, when: str) -> dict[str, Any]:
        """The properties every message has, whichever way it goes."""
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "date_created": when,
            "date_sent": when,
            "date_updated": when,
            "error_code": None,
            "error_message": None,
            "messaging_service_sid": None,
            "price": None,
            "price_unit": None,
            "sid": sid,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "uri": f"{base}.json",
        }

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Wait (without polling sleeps) until ``predicate()`` holds after some request activity."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- request handling (called from handler threads)

    def _record(self, recorded: Recorded) -> None:
        with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()

    def _problem(self, recorded: Recorded, message: str) -> None:
        with self._changed:
            self.problems.append(f"{recorded.method} {recorded.path}: {message}")
            self._changed.notify_all()

    def _answered(self, recorded: Recorded, status: int) -> None:
        with self._changed:
            recorded.status = status
            self._changed.notify_all()

    def _handle(self, recorded: Recorded, raw_path: str, content_type: str, auth: str | None) -> Reply:
        one = self._one_message_sid(recorded.path)
        if one is not None:
            return self._handle_one(recorded, raw_path, one, auth)
        path_ok = recorded.path == self.messages_path
        if not path_ok or recorded.method not in ("GET", "POST"):
            status, code = (405, 20004) if path_ok else (404, 20404)
            message = (
                "Method not allowed" if path_ok else f"The requested resource {recorded.path} was not found"
            )
            self._problem(
                recorded, f"{status}: no such operation in this fake ({recorded.method} {raw_path})"
            )
            return Reply.error(status, code, message)
        if _credentials(auth) != (self.account_sid, self.auth_token):
            self._problem(recorded, "401: HTTP Basic auth is missing or not account_sid:auth_token")
            return Reply.error(401, 20003, "Authenticate")
        if recorded.method == "GET":
            return self._list(recorded)
        return self._create(recorded, content_type)

    def _one_message_sid(self, path: str) -> str | None:
        """The Sid in a path of this account's one-message resource (MESSAGE_PATH), else None."""
        prefix = MESSAGE_PATH.format(AccountSid=self.account_sid, Sid="")[: -len(".json")]
        found = re.fullmatch(re.escape(prefix) + r"([^/]+)\.json", path)
        return found.group(1) if found else None

    def _handle_one(self, recorded: Recorded, raw_path: str, sid: str, auth: str | None) -> Reply:
        """Fetch one message: GET .../Messages/{Sid}.json (update and delete are not in this fake)."""
        if recorded.method != "GET":
            self._problem(recorded, f"405: no such operation in this fake ({recorded.method} {raw_path})")
            return Reply.error(405, 20004, "Method not allowed")
        if _credentials(auth) != (self.account_sid, self.auth_token):
            self._problem(recorded, "401: HTTP Basic auth is missing or not account_sid:auth_token")
            return Reply.error(401, 20003, "Authenticate")
        problems: list[str] = []
        if recorded.query:  # the spec's fetch operation has none
            problems.append(f"unexpected query parameters on fetch: {sorted(recorded.query)}")
        problems += _value_problems("Sid", self.contract.message_properties["sid"], sid)
        if problems:
            return self._reject(recorded, problems)
        message = self._find(sid)
        if message is None:  # a valid request for a message this account does not have: Twilio's 404
            return Reply.error(404, 20404, f"The requested resource {recorded.path} was not found")
        with self._lock:
            return Reply(200, json.dumps(message).encode())

    def _reject(self, recorded: Recorded, problems: list[str]) -> Reply:
        for message in problems:
            self._problem(recorded, message)
        return Reply.error(400, 20001, "Invalid request: " + "; ".join(problems))

    def _create(self, recorded: Recorded, content_type: str) -> Reply:
        spec = self.contract
        problems: list[str] = []
        if content_type.split(";")[0].strip().lower() != FORM_CONTENT_TYPE:
            problems.append(f"Content-Type {content_type!r} is not {FORM_CONTENT_TYPE}")
        if recorded.query:
            problems.append(f"unexpected query parameters on create: {sorted(recorded.query)}")
        fields = recorded.form_lists
        for name, values in fields.items():
            schema = spec.create_fields.get(name)
            if schema is None:
                problems.append(f"form field {name!r} is not defined by the spec's CreateMessageRequest")
            elif schema.get("type") == "array":
                for value in values:
                    problems += _value_problems(name, schema["items"], value)
            elif len(values) > 1:
                problems.append(f"form field {name!r} given {len(values)} times")
            else:
                problems += _value_problems(name, schema, values[0])
        form = recorded.form
        problems += [
            f"required form field {name!r} is missing" for name in spec.create_required if not form.get(name)
        ]
        if not (form.get("From") or form.get("MessagingServiceSid")):
            problems.append("one of 'From' or 'MessagingServiceSid' is required")
        if not (form.get("Body") or form.get("ContentSid") or fields.get("MediaUrl")):
            problems.append("one of 'Body', 'ContentSid' or 'MediaUrl' is required")
        if problems:
            return self._reject(recorded, problems)

        with self._lock:
            scripted = bool(self._script)
            outcome = self._script.pop(0) if scripted else Outcome()
            recorded.fault = fault = None if scripted else self._draw_fault()
            late = self._faults.slow_seconds if fault == SLOW_REPLY and self._faults else 0.0
        if fault == SERVER_ERROR:
            return Reply.error(500, 20500, "An internal server error has occurred")
        if fault == RATE_LIMITED:
            return Reply.error(429, 20429, "Too Many Requests")
        if fault == DROP_BEFORE_STORE:
            raise _Abort
        if outcome.delay and self._stopping.wait(outcome.delay):
            raise _Abort
        if outcome.body is not None:
            return Reply(outcome.status, outcome.body, outcome.content_type)

        message = self._message(recorded)
        with self._changed:
            self.created.append(message)
            self._listed.append(message)
            self.accepted_event.set()
            self._changed.notify_all()
        if fault == DROP_AFTER_STORE:
            raise _Abort
        if late and self._stopping.wait(late):
            raise _Abort
        hold = self.hold
        if hold is not None:
            while not hold.wait(0.05):
                if self._stopping.is_set():
                    break
        return Reply(201, json.dumps(message).encode())

    def _message(self, recorded: Recorded) -> dict[str, Any]:
        form, media = recorded.form, recorded.form_lists.get("MediaUrl", [])
        now = rfc2822(self.clock())
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        known: dict[str, Any] = {
            **self._common(sid, now),
            "body": form.get("Body", ""),
            "direction": "outbound-api",
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": str(len(media)),
            "num_segments": str(segments(form.get("Body", ""))),
            "status": "queued",
            "to": form["To"],
        }
        return {key: known.get(key) for key in self.contract.message_keys}

    def _list(self, recorded: Recorded) -> Reply:
        params = self.contract.list_params
        problems: list[str] = []
        for name, value in recorded.query.items():
            if name not in params:
                problems.append(f"query parameter {name!r} is not defined by the spec's list operation")
            else:
                problems += _value_problems(name, params[name], value)
        if problems:
            return self._reject(recorded, problems)

        query = recorded.query
        with self._lock:
            matching = [m for m in reversed(self._listed) if _matches(m, query)]  # newest first, like Twilio
        page = int(query.get("Page", 0))
        page_size = int(query.get("PageSize", 50))
        start = page * page_size
        chunk = matching[start : start + page_size]

        def page_uri(number: int) -> str:
            kept = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}
            return f"{self.messages_path}?{urlencode({**kept, 'PageSize': page_size, 'Page': number})}"

        has_next = start + page_size < len(matching)
        known: dict[str, Any] = {
            "end": start + max(len(chunk), 1) - 1,
            "first_page_uri": page_uri(0),
            "messages": chunk,
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": page_uri(page),
        }
        body = {key: known.get(key) for key in self.contract.list_keys}
        with self._lock:  # set_status may change a listed message while it is serialised
            return Reply(200, json.dumps(body).encode())


def _credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _matches(message: dict[str, Any], query: dict[str, str]) -> bool:
    if "To" in query and message["to"] != query["To"]:
        return False
    if "From" in query and message["from"] != query["From"]:
        return False
    sent = email.utils.parsedate_to_datetime(message["date_sent"]) if message["date_sent"] else None
    accepts: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
        ("DateSent", operator.eq),
        ("DateSent>", operator.ge),  # Twilio: "on or after"
        ("DateSent<", operator.le),  # Twilio: "on or before"
    )
    for name, accept in accepts:
        if name not in query:
            continue
        if sent is None:
            return False
        bound, date_only = _parse_when(query[name])
        if date_only and not accept(sent.date(), bound.date()):
            return False
        if not date_only and not accept(sent, bound.replace(microsecond=0)):
            return False
    return True


@dataclass(frozen=True)
class Reply:
    """An HTTP answer the handler writes."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def error(cls, status: int, code: int, message: str) -> Reply:
        """A Twilio-style JSON error reply."""
        return cls(status, json.dumps(error_body(status, code, message)).encode())


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False  # never join handler threads on close (a held request must not block stop/down)
    fake: FakeTwilio

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the handler records its own failures; nothing may reach stderr


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # socket timeout: a client that connects and never sends cannot pin a thread forever
    server_version = "FakeTwilio/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        self.close_connection = True
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            # The client died mid-request (a SIGKILLed sender): like Twilio, nothing happens.
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        pairs = parse_qsl(text, keep_blank_values=True)
        form_lists: dict[str, list[str]] = {}
        for name, value in pairs:
            form_lists.setdefault(name, []).append(value)
        recorded = Recorded(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            form=dict(pairs),
            headers=dict(self.headers.items()),
            form_lists=form_lists,
        )
        fake._record(recorded)
        try:
            if raw and not text:
                fake._problem(recorded, "request body is not UTF-8")
                reply = Reply.error(400, 20001, "Request body is not UTF-8")
            else:
                reply = fake._handle(
                    recorded,
                    self.path,
                    self.headers.get("Content-Type", ""),
                    self.headers.get("Authorization"),
                )
        except _Abort:
            return
        except Exception as exc:  # a bug in the fake: surface it to the test, answer 500
            fake._problem(recorded, f"fake crashed: {exc!r}")
            reply = Reply.error(500, 20500, "FakeTwilio internal error")
        fake._answered(recorded, reply.status)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", f"{reply.content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (OSError, ValueError):
            return  # the client gave up (timeout) or the fake is stopping


__all__ = [
    "DROP_AFTER_STORE",
    "DROP_BEFORE_STORE",
    "FAULT_KINDS",
    "RATE_LIMITED",
    "SERVER_ERROR",
    "SLOW_REPLY",
    "SPEC_PATH",
    "Contract",
    "FakeTwilio",
    "Faults",
    "Outcome",
    "Recorded",
    "bad_gateway_html",
    "contract",
    "contract_drift",
    "error",
    "load_spec",
    "rate_limited",
    "server_error",
    "slow",
    "spec_contract",
]
