"""Channels: how a message leaves. Each one sends an Outgoing or raises SendError."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: a command that sends nothing loads no pace
    from aftercare.channels.rate_limit import Pace


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
    # The sender already waited for this message's slot at the channel's pace (the
    # dispatcher does, to renew its claim after a long wait): the channel must not wait again.
    paced: bool = False


class Channel(ABC):
    """The one contract: `send` returns the provider's id for the message or raises SendError."""

    name: str
    # How many sends may be in flight at once: above 1, the dispatcher sends through as many
    # worker threads (the channel must then be safe to call from several threads at once).
    concurrency: int = 1
    # The provider account's rate, shared by every sender on the database; None: unpaced.
    pace: Pace | None = None
    # The most one message may cost against the pace (an SMS: its segments).
    max_cost: float = 1.0
    # True for a channel that never touches the network (console): no send waits out a
    # timeout, so claims are not sized by one.
    offline: bool = False

    @abstractmethod
    def send(self, message: Outgoing) -> str: ...

    def cost(self, message: Outgoing) -> float:
        """What sending `message` counts against the pace; 1 by default."""
        return 1.0

    def close(self) -> None:
        """Let go of connections kept between sends (at shutdown); a later send reopens."""
        return None  # none kept by default

    def wait_turn(self, message: Outgoing) -> None:
        """Wait for `message`'s slot at the channel's pace, unless its sender already did."""
        if self.pace is not None and not message.paced:
            self.pace.wait(self.cost(message))

    def check(self) -> list[str]:
        """Problems with this channel's setup, found by asking the provider; none by default."""
        return []

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        """The provider's id of a message it accepted to `to` with `body` since `since`, for
        recovery after a crash; None when it cannot tell (email: resent under one Message-ID)."""
        return None
