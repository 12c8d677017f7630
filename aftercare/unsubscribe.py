"""Signed one-click unsubscribe tokens (RFC 8058) for the links in every email.

A token is the patient's id and the time it was issued, with an HMAC-SHA256 of both under
the secret key, in URL-safe base64: no database row, and nothing to guess. Only someone
holding AFTERCARE_SECRET_KEY can make one, and `read_token` tells forged, expired and
malformed tokens apart from good ones before anything is written.

The secret key comes only from the environment (AFTERCARE_SECRET_KEY), never from the
config file. It must be long and random, e.g. `python -c "import secrets;
print(secrets.token_urlsafe(48))"`; whoever knows it can unsubscribe any patient. Changing
it invalidates every link already sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from datetime import UTC, datetime, timedelta

from aftercare.errors import UserError

SECRET_ENV = "AFTERCARE_SECRET_KEY"
# Shorter keys are refused: the key is the only thing standing between a guessed link and
# a patient's consent.
MIN_SECRET_BYTES = 32

# How long a link in an email keeps working: patients open and act on aftercare emails
# weeks or months later (a course runs for months), and a link that fails when a patient
# asks to stop is worse than an old link that still works. Forged links never work.
MAX_AGE = timedelta(days=180)
# Tolerated lead of the issue time over the verifier's clock (the daemon that composes the
# email and the web service that reads the link may run on different machines).
CLOCK_SKEW = timedelta(hours=1)

# patient id (8 bytes, unsigned) + issue time in whole seconds since 1970 (4 bytes,
# unsigned, good until 2106), then the MAC truncated to 128 bits (RFC 2104 section 5 allows
# truncation to half the hash length): 28 bytes, 38 characters of unpadded base64.
_PAYLOAD = struct.Struct(">QI")
_MAC_BYTES = 16
_TOKEN_CHARS = 38
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{_TOKEN_CHARS}}}")
# Binds the MAC to this use, should the same key ever sign anything else.
_DOMAIN = b"aftercare/unsubscribe/v1\x00"


class InvalidToken(ValueError):
    """The token is not one we issued and still honour; `reason` is "malformed", "forged",
    "expired" or "not yet valid". Nothing about the patient is in the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"unsubscribe token {reason}")
        self.reason = reason


def secret_from_env() -> bytes | None:
    """AFTERCARE_SECRET_KEY as bytes, or None when it is unset or empty (one-click unsubscribe
    is then off); a UserError when it is too short to be safe."""
    value = os.environ.get(SECRET_ENV, "")
    if not value:
        return None
    secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise UserError(SECRET_ENV, f"is shorter than {MIN_SECRET_BYTES} characters; set it to a "
                        "long random string, e.g. the output of `python -c \"import secrets; "
                        "print(secrets.token_urlsafe(48))\"`")
    return secret


def make_token(patient_id: int, now: datetime, secret: bytes) -> str:
    """A token standing for `patient_id`, issued at `now` (an aware time)."""
    if not secret:
        raise ValueError("the secret key is empty")
    if not 0 <= patient_id < 2**64:
        raise ValueError(f"patient id {patient_id} is out of range")
    payload = _PAYLOAD.pack(patient_id, _seconds(now))
    return base64.urlsafe_b64encode(payload + _mac(payload, secret)).rstrip(b"=").decode("ascii")


def read_token(token: str, now: datetime, secret: bytes, max_age: timedelta = MAX_AGE) -> int:
    """The patient id in `token`, or InvalidToken if it is malformed, forged (not made with
    `secret`), issued more than `max_age` before `now`, or issued in the future."""
    if not secret:
        raise ValueError("the secret key is empty")
    if not _TOKEN.fullmatch(token):
        raise InvalidToken("malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed") from None
    # One spelling per token: unused low bits of the last character must be zero.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidToken("malformed")
    payload, mac = raw[:_PAYLOAD.size], raw[_PAYLOAD.size:]
    if not hmac.compare_digest(mac, _mac(payload, secret)):
        raise InvalidToken("forged")
    patient_id, issued = _PAYLOAD.unpack(payload)
    age = _seconds(now) - issued
    if age > max_age.total_seconds():
        raise InvalidToken("expired")
    if -age > CLOCK_SKEW.total_seconds():
        raise InvalidToken("not yet valid")
    return int(patient_id)


def _mac(payload: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("give an aware time (UTC), not a naive one")
    seconds = int(moment.astimezone(UTC).timestamp())
    if not 0 <= seconds < 2**32:
        raise ValueError(f"{moment.isoformat()} is out of the token's range (1970 to 2106)")
    return seconds
