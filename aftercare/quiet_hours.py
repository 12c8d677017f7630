"""Quiet hours: nothing reaches a patient between quiet_start and quiet_end, their local time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    """A daily window, in the patient's local wall-clock time; start == end means none."""

    start: time
    end: time

    def is_quiet(self, local: time) -> bool:
        """Whether a local wall-clock time falls inside the window."""
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """`moment` itself if allowed, else the next quiet_end in `tz`, as UTC."""
        local = moment.astimezone(tz)
        if not self.is_quiet(local.time().replace(tzinfo=None)):
            return moment.astimezone(UTC)
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day += timedelta(days=1)
        # Built from the calendar date so 09:00 stays 09:00 across a DST change.
        return datetime.combine(day, self.end, tzinfo=tz).astimezone(UTC)

    def send_time(self, moment: datetime, deadline: datetime | None,
                  tz: ZoneInfo) -> datetime | None:
        """When a message due at `moment` may reach the patient: the first allowed time, or
        None when that is not before `deadline`. Planning and sending both ask this."""
        allowed = self.next_allowed(moment, tz)
        return allowed if deadline is None or allowed < deadline else None
