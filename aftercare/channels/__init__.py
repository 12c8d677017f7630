"""Channels: how a message leaves. Each one sends an Outgoing or raises SendError."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime


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
    patient_id: int | None = None  # e.g. for the email's signed one-click unsubscribe link


class Channel(ABC):
    """The one contract: `send` returns the provider's id for the message or raises SendError."""

    name: str

    @abstractmethod
    def send(self, message: Outgoing) -> str: ...

    def check(self) -> list[str]:
        """Problems with this channel's setup, found by asking the provider; none by default."""
        return []

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        """The provider's id of a message it accepted to `to` with `body` since `since`, for
        recovery after a crash; None when it cannot tell (email: resent under one Message-ID)."""
        return None
