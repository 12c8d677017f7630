"""Protocol files: strict loading, clear errors, timing in the patient's zone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aftercare.errors import UserError
from aftercare.protocols import ProtocolBook, load_protocol, parse_duration
from conftest import utc

GOOD = """
key = "demo"
name = "demo treatment"
sessions = 3
spacing_days = [7, 14]
[[steps]]
key = "first"
title = "First"
after = "1h"
valid_for = "12h"
"""


def test_packaged_cellulite_protocol_has_the_required_steps() -> None:
    protocol = ProtocolBook.load().get("cellulite")
    keys = [step.key for step in protocol.steps]
    for required in ("first_48h", "arnica", "activity", "check_48h", "routine", "next_session"):
        assert required in keys
    assert protocol.step("next_session").anchor == "next_session"
    assert 3 <= protocol.sessions <= 6 and protocol.spacing_days == (7, 14)


def test_calendar_offset_keeps_local_wall_clock_across_dst() -> None:
    step = ProtocolBook.load().get("cellulite").step("activity")  # next day at 10:00
    ny = ZoneInfo("America/New_York")
    assert step.planned_at(utc("2026-03-07T15:00-05:00"), ny) == utc("2026-03-08T10:00-04:00")
    assert step.planned_at(utc("2026-10-31T15:00-04:00"), ny) == utc("2026-11-01T10:00-05:00")


@pytest.mark.parametrize(("text", "delta"), [("30m", timedelta(minutes=30)),
                                             ("48h", timedelta(hours=48)),
                                             ("-2d", timedelta(days=-2))])
def test_durations(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        (('after = "1h"', 'after = "soon"'), "steps.0.after"),
        (('after = "1h"', 'days = 1'), "needs `at`"),
        (('after = "1h"', 'after = "1h"\ndays = 1\nat = "10:00"'), "either `after`"),
        (('valid_for = "12h"', 'valid_for = "12h"\ncolour = "blue"'), "steps.0.colour"),
        (('key = "demo"', 'key = "other"'), "must equal the file name"),
        (('sessions = 3', 'sessions = 0'), "sessions"),
        (('title = "First"', 'title = "First"\nchannels = ["fax"]'), "steps.0.channels"),
        (('[[steps]]', '[[steps'), "not valid TOML"),
    ],
)
def test_broken_protocol_files_name_file_and_key(tmp_path: Path, change: tuple[str, str],
                                                 mentions: str) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(GOOD.replace(*change), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_protocol(path)
    assert mentions in str(caught.value) and str(path) in str(caught.value)


def test_good_protocol_loads(tmp_path: Path) -> None:
    (tmp_path / "demo.toml").write_text(GOOD, encoding="utf-8")
    book = ProtocolBook.load(tmp_path)
    assert [p.key for p in book] == ["demo"]
    with pytest.raises(UserError, match="known: demo"):
        book.get("cellulite")


def test_maintenance_cadence_runs_to_the_horizon() -> None:
    maintenance = ProtocolBook.load().get("cellulite").maintenance
    assert maintenance is not None
    days = [d.days for d in maintenance.offsets(timedelta(days=365))]
    assert days == [35, 70, 105, 180, 255, 330]
    assert maintenance.offsets(timedelta(days=100)) == [timedelta(days=35), timedelta(days=70)]
    assert maintenance.offsets(timedelta(0)) == []


@pytest.mark.parametrize(("extra", "message"), [
    ('[[steps]]\nkey = "m"\ntitle = "M"\nanchor = "maintenance"\ndays = 0\nat = "10:00"\n'
     'valid_for = "7d"\n', "needs [maintenance] cadence"),
    ('[maintenance]\nsummary = "s"\ncadence = [{ every_days = 30 }, { every_days = 60 }]\n',
     "every cadence phase but the last needs `times`"),
    ('[[steps]]\nkey = "r"\ntitle = "R"\nanchor = "rebooking"\ndays = 0\nat = "10:00"\n'
     'valid_for = "3d"\non_sessions = "first"\n', "`on_sessions` only applies"),
])
def test_bad_course_settings_name_the_problem(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(GOOD + extra, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_protocol(path)
    assert message in str(caught.value)
