"""Channels: how a message leaves. Each one sends an Outgoing or raises SendError."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """One rendered message, addressed, ready for a channel."""

    message_id: int
    channel: str
    to: str
    patient_name: str
    timezone: str
    step: str
    text: str
    subject: str | None = None
    html: str | None = None
    at: datetime | None = None  # the dispatcher's clock; lets the console show simulated time


class Channel(Protocol):
    """The one contract: return the provider's id for the message, or raise SendError."""

    name: str

    def send(self, message: Outgoing) -> str: ...
