"""Console channels: print messages instead of sending them (demos, dry runs, first steps)."""

from __future__ import annotations

import sys
from typing import TextIO

from aftercare.channels import Channel, Outgoing
from aftercare.clock import zone

_RULE = "-" * 72


class ConsoleChannel(Channel):
    """Writes each message to a stream, as the patient would see it."""

    offline = True  # no provider: claims are not sized by a timeout (`batch_limit`)

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self._stream = stream

    def send(self, message: Outgoing) -> str:
        stream = self._stream or sys.stdout
        when = ""
        if message.at is not None:
            local = message.at.astimezone(zone(message.timezone))
            when = f"  {local:%a %d %b %Y %H:%M} {local.tzname()}"
        kind = "SMS" if message.channel == "sms" else "Email"
        lines = [_RULE, f"{kind} #{message.message_id} to {message.patient_name} "
                 f"<{message.to}>  [{message.step}]{when}"]
        if message.subject:
            lines.append(f"Subject: {message.subject}")
        lines += ["", message.text, ""]
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return f"console-{message.message_id}"
