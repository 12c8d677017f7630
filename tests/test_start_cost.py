"""Cheap start and dispatch: a command loads only what it uses, templates are checked once
per change, and fast sends share transactions without changing any outcome."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import event

from aftercare import content_check
from aftercare.channels import Channel, Outgoing
from aftercare.cli import COMMANDS, cli
from aftercare.config import Settings
from aftercare.content_check import checked_content_problems
from aftercare.db import head_revision, make_engine
from aftercare.protocols import ProtocolBook
from aftercare.rendering import Renderer
from aftercare.resources import MIGRATIONS, data_dir
from conftest import Clinic, FixedClock

# What a start that sends nothing must not load: the web service, Twilio, Argon2, Alembic,
# and (once the templates were checked) Jinja and Babel.
HEAVY = ("twilio", "requests", "uvicorn", "starlette", "argon2", "alembic", "jinja2", "babel",
         "prometheus_client")

_LOADED = """\
import json, sys
from aftercare.cli import main
heavy = json.loads(sys.argv[2])
sys.argv = ["aftercare", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code,
                  "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(heavy))}))
"""


def _loaded(folder: Path, *args: str) -> tuple[object, list[str]]:
    """Run `aftercare ARGS` in a fresh interpreter: its exit code and the heavy packages
    it imported."""
    done = subprocess.run([sys.executable, "-c", _LOADED, json.dumps(args), json.dumps(HEAVY)],
                          cwd=folder, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_help_loads_no_command_module(tmp_path: Path) -> None:
    code, loaded = _loaded(tmp_path, "--help")
    assert code == 0
    assert loaded == []


def test_an_idle_send_due_loads_neither_jinja_nor_the_web_nor_twilio(clinic: Clinic) -> None:
    code, first = _loaded(clinic.folder, "--config", str(clinic.config), "send-due")
    assert code == 0
    assert "jinja2" in first  # the first start checks every template...
    code, loaded = _loaded(clinic.folder, "--config", str(clinic.config), "send-due")
    assert code == 0
    assert loaded == []  # ...the next finds them unchanged and renders nothing


def test_the_command_list_says_what_each_command_says(clinic: Clinic) -> None:
    for name, (module, attribute, summary) in COMMANDS.items():
        command = getattr(importlib.import_module(f"aftercare.cli.{module}"), attribute)
        assert command.name == name
        stand_in = click.Command(name, help=summary)
        for limit in (45, 300):
            assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), name
    assert set(COMMANDS) <= set(cli.list_commands(click.Context(cli)))


def test_the_head_revision_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A clinic's template folder holding a copy of one packaged SMS."""
    folder = tmp_path / "templates" / "en"
    folder.mkdir(parents=True)
    source = data_dir("templates") / "en" / "first_48h.sms.txt"
    (folder / "first_48h.sms.txt").write_text(source.read_text(encoding="utf-8"),
                                              encoding="utf-8")
    return folder


def test_templates_are_checked_once_per_change(tmp_path: Path, templates: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[int] = []
    real = content_check.content_problems

    def counted(*args: object, **kwargs: object) -> list[str]:
        checks.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(content_check, "content_problems", counted)
    settings, protocols = Settings(), ProtocolBook.load()
    database = Settings().database.url.replace("aftercare.db", str(tmp_path / "clinic.db"))
    from sqlalchemy.engine import make_url

    url, today = make_url(database), datetime(2026, 12, 2, 15, tzinfo=UTC)

    def check() -> list[str]:
        # A new Renderer each time, as each start builds one.
        return checked_content_problems(settings, protocols, Renderer([templates.parent]), url,
                                        today=today)

    assert check() == [] and len(checks) == 1
    assert check() == [] and len(checks) == 1  # nothing changed: not rendered again
    sms = templates / "first_48h.sms.txt"
    sms.write_text(sms.read_text(encoding="utf-8") + "\n{{ patient.nickname }}\n",
                   encoding="utf-8")
    broken = check()
    assert len(checks) == 2 and any("first_48h" in problem for problem in broken)
    assert check() == broken and len(checks) == 3  # a problem is never remembered
    sms.write_text(sms.read_text(encoding="utf-8").replace("{{ patient.nickname }}", ""),
                   encoding="utf-8")
    assert check() == [] and len(checks) == 4
    assert check() == [] and len(checks) == 4
    # Another day: dated sample messages differ (day names), so they are checked again.
    assert checked_content_problems(settings, protocols, Renderer([templates.parent]), url,
                                    today=datetime(2026, 12, 3, 15, tzinfo=UTC)) == []
    assert len(checks) == 5


def test_the_check_is_not_remembered_without_a_database_file(
        templates: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[int] = []

    def counted(*args: object, **kwargs: object) -> list[str]:
        checks.append(1)
        return []

    monkeypatch.setattr(content_check, "content_problems", counted)
    from sqlalchemy.engine import make_url

    for _ in range(2):
        checked_content_problems(Settings(), ProtocolBook.load(), Renderer([templates.parent]),
                                 make_url("sqlite:///:memory:"))
    assert len(checks) == 2


class _Recording(Channel):
    """Records what it sends; `step` moves the clock per send (a slow provider)."""

    def __init__(self, name: str, clock: FixedClock, step: timedelta) -> None:
        self.name, self.clock, self.step = name, clock, step
        self.sent: list[Outgoing] = []

    def send(self, message: Outgoing) -> str:
        self.sent.append(message)
        self.clock.now += self.step
        return f"id-{message.message_id}"


def _dispatch_days(clinic: Clinic, database: Path, step: timedelta) -> tuple[list[Any], int]:
    """Passes over the first week on a copy of the clinic's database: every message row
    as it ends (what was sent, in which words), and how many transactions were committed."""
    app = clinic.app()
    app.engine = make_engine(f"sqlite:///{database}")
    commits: list[int] = []
    event.listen(app.engine, "commit", lambda conn: commits.append(1))
    clock = FixedClock(datetime(2026, 3, 2, 17, tzinfo=UTC))
    app.clock = clock
    channel = _Recording("both", clock, step)
    app.channels.update(sms=channel, email=channel)
    for day in range(8):
        clock.now = datetime(2026, 3, 2, 17, tzinfo=UTC) + timedelta(days=day)
        app.dispatcher().run_once()
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT id, status, body, subject, last_error, attempts FROM message "
                            "ORDER BY id").fetchall()
    app.engine.dispose()
    return rows, len(commits)


def test_fast_sends_go_in_groups_and_change_no_outcome(clinic: Clinic) -> None:
    for i in range(5):
        clinic.json("patient", "add", "--name", f"Pat {i}", "--phone", f"+1212555014{i}",
                    "--email", f"p{i}@example.com", "--ref", f"P{i}")
        clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", f"P{i}", "--treatment",
                    "cellulite", "--session-at", "2026-03-02T10:30")
    copies = []
    for name in ("grouped.db", "alone.db"):
        with sqlite3.connect(clinic.db_path) as source, sqlite3.connect(clinic.folder / name) as copy:
            source.backup(copy)
        copies.append(clinic.folder / name)
    grouped, grouped_commits = _dispatch_days(clinic, copies[0], timedelta(0))
    # A send that takes a second (on the app's clock) keeps every message on its own.
    alone, alone_commits = _dispatch_days(clinic, copies[1], timedelta(seconds=1))
    assert sum(1 for row in grouped if row[1] == "sent") >= 20
    assert grouped == alone  # same messages sent, in the same words (first SMS included)
    assert grouped_commits < alone_commits * 2 / 3  # groups share their transactions
