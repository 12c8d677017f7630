"""Quiet hours in the patient's local time, DST included."""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo

import pytest

from aftercare.quiet_hours import QuietHours
from conftest import utc

NY = ZoneInfo("America/New_York")
NIGHT = QuietHours(time(20, 0), time(9, 0))


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-11-10T10:00-05:00", "2026-11-10T10:00-05:00"),  # allowed: unchanged
        ("2026-11-10T19:59-05:00", "2026-11-10T19:59-05:00"),
        ("2026-11-10T20:00-05:00", "2026-11-11T09:00-05:00"),  # evening: next morning
        ("2026-11-10T23:30-05:00", "2026-11-11T09:00-05:00"),
        ("2026-11-11T03:00-05:00", "2026-11-11T09:00-05:00"),  # small hours: same morning
        ("2026-11-11T09:00-05:00", "2026-11-11T09:00-05:00"),
        # Saturday night before spring forward: 09:00 Sunday is EDT (UTC-4), not 10:00.
        ("2026-03-07T22:00-05:00", "2026-03-08T09:00-04:00"),
        # Night of fall back (25-hour night): still 09:00 local.
        ("2026-10-31T21:00-04:00", "2026-11-01T09:00-05:00"),
    ],
)
def test_next_allowed_new_york(moment: str, expected: str) -> None:
    assert NIGHT.next_allowed(utc(moment), NY) == utc(expected)


def test_same_instant_differs_by_patient_zone() -> None:
    moment = utc("2026-11-10T22:00+00:00")  # 17:00 in New York, 23:00 in Paris
    assert NIGHT.next_allowed(moment, NY) == moment
    assert NIGHT.next_allowed(moment, ZoneInfo("Europe/Paris")) == utc("2026-11-11T09:00+01:00")


def test_daytime_window_and_no_window() -> None:
    lunch = QuietHours(time(12, 0), time(14, 0))
    assert lunch.next_allowed(utc("2026-11-10T12:30-05:00"), NY) == utc("2026-11-10T14:00-05:00")
    assert lunch.next_allowed(utc("2026-11-10T20:30-05:00"), NY) == utc("2026-11-10T20:30-05:00")
    never = QuietHours(time(9, 0), time(9, 0))
    assert never.next_allowed(utc("2026-11-10T03:00-05:00"), NY) == utc("2026-11-10T03:00-05:00")
