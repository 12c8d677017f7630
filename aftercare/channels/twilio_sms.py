"""SMS through Twilio's REST API with the official client."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from requests.exceptions import ConnectTimeout
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from aftercare.channels import Channel, Outgoing
from aftercare.channels.rate_limit import Pace, RateLimiter
from aftercare.config import SmsConfig
from aftercare.errors import PHONE_INVALID, SMS_OPTED_OUT, SendError
from aftercare.segments import MAX_BUDGET, measure

# Twilio error codes that condemn the number itself, not just this message.
ROUTE_ERRORS = {21211: PHONE_INVALID, 21614: PHONE_INVALID, 21610: SMS_OPTED_OUT}
# Delivery receipts (status callbacks) that condemn the number: unknown handset, landline
# or unreachable carrier, and the send-time ones.
RECEIPT_ROUTE_ERRORS = {**ROUTE_ERRORS, 30005: PHONE_INVALID, 30006: PHONE_INVALID}
CARRIER_FILTERED = 30007
# 21212: invalid From number; 21606: From is not an SMS-capable number of this account.
SENDER_ERRORS = {21212, 21606}
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
# Clocks differ between this machine and Twilio's; adopt messages created a little "before".
CLOCK_SKEW = timedelta(minutes=2)


class TwilioSms(Channel):
    """Sends one SMS per call, several at once (`sms.concurrency`), at `sms.rate_per_second`
    counted in segments; classifies Twilio's answers into SendError.

    `limiter`: the pace (the app gives the one shared through the database); by default
    this process's own.
    """

    name = "sms"
    max_cost = float(MAX_BUDGET)

    def __init__(self, config: SmsConfig, account_sid: str, auth_token: str,
                 limiter: Pace | None = None, status_callback: str = "") -> None:
        self._config = config
        self._credentials = (account_sid, auth_token)
        self._status_callback = status_callback
        self.concurrency = config.concurrency
        self.pace = limiter or RateLimiter(config.rate_per_second)
        # twilio-python's client is not thread-safe: its HTTP client hands each response
        # back through an attribute of its own (TwilioHttpClient.request, 9.x), so two
        # requests at once could swap answers (twilio/twilio-python#580). Each call borrows
        # a client nobody else is using; idle ones are kept for the next.
        self._idle: list[Client] = []
        self._lock = threading.Lock()

    def cost(self, message: Outgoing) -> float:
        """Twilio's rate counts segments: a 2-segment SMS costs 2."""
        return float(measure(message.text).segments)

    def send(self, message: Outgoing) -> str:
        params = {"to": message.to, "body": message.text}
        if self._config.messaging_service_sid:
            params["messaging_service_sid"] = self._config.messaging_service_sid
        else:
            params["from_"] = self._config.from_
        if self._status_callback:
            params["status_callback"] = self._status_callback
        self.wait_turn(message)
        try:
            with self._client() as client:
                created = client.messages.create(**params)
        except TwilioRestException as exc:
            raise classify(exc) from None
        except OSError as exc:
            if _never_left(exc):
                raise SendError(f"network: {type(exc).__name__}", permanent=False) from None
            # Read timeout, connection dropped mid-request: Twilio may have the message.
            raise SendError(f"network: {type(exc).__name__}, outcome unknown", permanent=False,
                            unknown_outcome=True) from None
        except TwilioException as exc:
            raise SendError(f"twilio client: {type(exc).__name__}", permanent=False) from None
        return str(created.sid)

    def close(self) -> None:
        """Close the idle clients' HTTP sessions (their kept-alive connections)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            session = getattr(client.http_client, "session", None)
            if session is not None:
                session.close()

    @contextmanager
    def _client(self) -> Iterator[Any]:
        """A client for this thread's call alone: an idle one, else a new one."""
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = make_client(self._config, *self._credentials)
        try:
            yield client
        finally:
            with self._lock:
                self._idle.append(client)

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        """The SID of a message Twilio already accepted to `to` with `body` since `since`."""
        after = since - CLOCK_SKEW
        try:
            with self._client() as client:
                found = client.messages.list(to=to, date_sent_after=after, limit=20)
                # DateSent stays empty while a message waits in Twilio's queue: look at the
                # newest messages to that number as well, by creation time.
                found += client.messages.list(to=to, limit=20)
        except (TwilioException, OSError) as exc:
            raise SendError(f"cannot list messages: {type(exc).__name__}",
                            permanent=False) from None
        for candidate in found:
            created = candidate.date_created
            if candidate.body == body and (created is None or created >= after):
                return str(candidate.sid)
        return None

    def check(self) -> list[str]:
        """Problems with the setup, found by asking Twilio; empty when it works."""
        with self._client() as client:
            return _check(client)


def _check(client: Any) -> list[str]:
    """`TwilioSms.check` through one client."""
    try:
        client.messages.list(limit=1)
    except TwilioException as exc:
        # List calls raise a bare TwilioException carrying the HTTP response.
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", None) or getattr(exc, "status", "?")
        code = _error_code(response)
        if status in (401, 403):
            return [f"sms: Twilio refused the credentials or account (HTTP {status}, "
                    f"code {code}); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"]
        return [f"sms: Twilio answered HTTP {status} (code {code}) at "
                f"{client.api.base_url}; try again later"]
    except OSError as exc:
        return [f"sms: cannot reach Twilio at {client.api.base_url} ({type(exc).__name__})"]
    return []


def make_client(config: SmsConfig, account_sid: str, auth_token: str) -> Client:
    """The official client with `sms.timeout_seconds`, and `sms.api_base_url` when set."""
    client = Client(account_sid, auth_token,
                    http_client=TwilioHttpClient(timeout=config.timeout_seconds))
    if config.api_base_url:
        client.api.base_url = config.api_base_url
        # TWILIO_EDGE / TWILIO_REGION would rewrite the host of an explicit base URL.
        client.edge = client.region = None
    return client


def classify(exc: TwilioRestException) -> SendError:
    """Transient (retry later) or permanent (never), with what it says about the number."""
    code = exc.code
    reason = f"HTTP {exc.status}"
    if exc.status == 429 or exc.status >= 500:
        return SendError(reason, permanent=False, code=str(code) if code else None)
    if exc.status in (401, 403) or code in SENDER_ERRORS:
        # Our credentials or sender number, not this message: keep it until they are fixed.
        return SendError(f"{reason}: account or sender refused", permanent=False,
                         code=str(code), setup_problem=True)
    return SendError(f"{reason}: {_short(exc.msg)}", permanent=True, code=str(code),
                     consequence=ROUTE_ERRORS.get(code or 0))


def receipt_error(status: str, code: int | None) -> SendError:
    """What an `undelivered` or `failed` delivery receipt with `code` means, as a send error.

    Codes that condemn the number close the route (as at send time); carrier filtering
    (30007) is not retried and is flagged for the clinic; the rest (30003 unreachable now,
    30008 unknown...) may be retried within the message's window.
    """
    reason = f"Twilio {status}"
    if code in RECEIPT_ROUTE_ERRORS:
        return SendError(reason, permanent=True, code=str(code),
                         consequence=RECEIPT_ROUTE_ERRORS[code])
    if code == CARRIER_FILTERED:
        return SendError(f"{reason}: carrier filtering", permanent=True, code=str(code),
                         flag="filtered by the carrier as spam: review the wording and the "
                              "sender's registration (A2P 10DLC, toll-free verification)")
    return SendError(reason, permanent=False, code=str(code) if code else None)


def _error_code(response: object) -> object:
    try:
        return json.loads(getattr(response, "text", ""))["code"]
    except (ValueError, KeyError, TypeError):
        return "?"


def _never_left(exc: OSError) -> bool:
    """Whether the request certainly never reached Twilio (no connection was made)."""
    if isinstance(exc, ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _short(text: object) -> str:
    # Twilio's messages can quote the number; keep the code and a generic reason only.
    return re.sub(r"\+?\d[\d\s-]{5,}\d", "<number>", str(text))[:200]
