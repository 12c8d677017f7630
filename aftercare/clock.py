"""Time as the application sees it: an injectable clock and parsing of user-given times."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aftercare.errors import UserError

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real current time, in UTC."""
    return datetime.now(UTC)


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    """The IANA time zone `name`, or a UserError naming `field`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            field, f"'{name}' is not an IANA time zone name (e.g. America/New_York, Europe/Paris)"
        ) from None


def iso(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601 for JSON output, None staying None."""
    return moment.isoformat() if moment is not None else None


def parse_time(text: str, default_tz: ZoneInfo, field: str) -> datetime:
    """An ISO 8601 time in UTC; a time without an offset is read in `default_tz`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            field, f"'{text}' is not an ISO 8601 time; write e.g. 2026-11-22T14:30 or "
            "2026-11-22T14:30-05:00"
        ) from None
    if not 2000 <= moment.year <= 2100:
        raise UserError(field, f"'{text}' is not a plausible date; write a year between 2000 "
                        "and 2100")
    if moment.tzinfo is None:
        local = moment.replace(tzinfo=default_tz)
        # A wall time skipped when the clocks go forward would silently become another hour.
        if local.astimezone(UTC).astimezone(default_tz).replace(tzinfo=None) != moment:
            raise UserError(field, f"'{text}' does not exist in {default_tz.key}: the clocks go "
                            "forward then; write a time outside the skipped hour")
        moment = local
    return moment.astimezone(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
