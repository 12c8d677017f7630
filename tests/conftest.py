"""Shared fixtures: a clinic config on a real SQLite file, a CLI runner, a fixed clock."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from aftercare.app import App
from aftercare.cli import cli
from aftercare.clock import system_clock
from aftercare.db import migrate
from aftercare.dispatch import DispatchCounts, Dispatcher

if TYPE_CHECKING:  # for annotations only: the fixtures import these when they run
    from fakes.twilio import FakeTwilio

    from pg_kit import Server

CONFIG = """\
[clinic]
name = "Lumiere Aesthetics"
phone = "+1 212 555 0100"
email = "care@lumiere.example"
emergency_number = "911"
timezone = "America/New_York"
country = "US"

[messaging]
quiet_start = "20:00"
quiet_end = "09:00"

[database]
url = "sqlite:///{db}"

[daemon]
poll_seconds = 0.2
lease_seconds = 300
"""


SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


@dataclass
class Clinic:
    """A configured clinic in a temporary folder, driven through the real CLI."""

    folder: Path
    config: Path
    db_path: Path  # SQLite's file (none on PostgreSQL)
    url: str = ""  # the database URL

    @property
    def backend(self) -> str:
        return "postgresql" if self.url.startswith("postgresql") else "sqlite"

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.config), *args], obj={}, input=input)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of one query, read with the backend's own driver (not aftercare's code);
        times come as SQLite stores them on both backends, so one expectation fits both."""
        if self.backend == "postgresql":
            import psycopg

            def plain(value: Any) -> Any:
                return value.strftime(SQLITE_TIME) if isinstance(value, datetime) else value

            with psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql")) as pg:
                cursor = pg.execute(sql)
                if cursor.description is None:  # a write: the test prepares a state
                    return []
                return [tuple(map(plain, row)) for row in cursor.fetchall()]
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql).fetchall()

    def count(self, table: str) -> int:
        return self.rows(f"SELECT count(*) FROM {table}")[0][0]

    def app(self, clock: Callable[[], datetime] | None = None, **kwargs: Any) -> App:
        return App.from_config(self.config, clock=clock or system_clock, **kwargs)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its lowest cost in tests (production's costs half a second on a loaded CI
    machine per hash); test_staff checks the production parameters."""
    from argon2 import PasswordHasher

    from aftercare import staff

    monkeypatch.setattr(staff, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                         parallelism=1))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: run this module's or test's `clinic` on SQLite and PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: SQLite behaviour (files, WAL, pysqlite)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `backends` run once per database; the others on SQLite alone."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("backends") \
            and not metafunc.definition.get_closest_marker("sqlite_only"):
        metafunc.parametrize("backend", ["sqlite", "postgresql"])


@pytest.fixture
def backend() -> str:
    """The database the test's clinic uses (see `pytest_generate_tests`)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """The PostgreSQL server of this run: CI's, or one started here (skipped if none can)."""
    from pg_kit import ENV_REQUIRE, ENV_URL, NoServer, Server, cluster

    given = os.environ.get(ENV_URL)
    if given:
        server = Server(given)
        yield server
        server.close()
        return
    try:
        with cluster() as url:
            server = Server(url)
            yield server
            server.close()
    except NoServer as exc:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"PostgreSQL is required here ({ENV_REQUIRE}=1) but {exc}")
        pytest.skip(f"PostgreSQL tests need a server: {exc}")


@pytest.fixture(scope="session")
def postgres_template(postgres_server: Server) -> str:
    """A database at this release's schema, copied for each test (migrating costs seconds)."""
    from aftercare.db import make_engine

    url = postgres_server.create()
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()  # a template must have no connections
    return url


@pytest.fixture
def postgres_url(postgres_server: Server) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards)."""
    url = postgres_server.create()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str,
           request: pytest.FixtureRequest) -> Iterator[Clinic]:
    """A clinic whose database is initialised; the working directory is a temp folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("AFTERCARE_CONFIG", "AFTERCARE_DATABASE__URL"):
        monkeypatch.delenv(name, raising=False)
    db_path = tmp_path / "clinic.db"
    config = tmp_path / "aftercare.toml"
    if backend == "sqlite":
        url = f"sqlite:///{db_path}"
        config.write_text(CONFIG.format(db=db_path), encoding="utf-8")
        made = Clinic(tmp_path, config, db_path, url)
        migrate(made.app().engine)
        yield made
        return
    server: Server = request.getfixturevalue("postgres_server")
    url = server.create_from(request.getfixturevalue("postgres_template"))
    config.write_text(CONFIG.replace('"sqlite:///{db}"', json.dumps(url)), encoding="utf-8")
    yield Clinic(tmp_path, config, db_path, url)
    server.drop(url)


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def utc(text: str) -> datetime:
    """An ISO time as aware UTC (offset required in tests, to be explicit)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, "give tests explicit offsets"
    return moment.astimezone(UTC)


def midday_zone() -> str:
    """A fixed-offset zone where it is about noon now (real clock), clear of quiet hours."""
    offset = 12 - datetime.now(UTC).hour  # hours to add to UTC
    # POSIX-style names: Etc/GMT-8 is UTC+8.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


@pytest.fixture
def fake_twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """A running fake Twilio (checked against Twilio's OpenAPI spec) and its credentials."""
    from fakes.twilio import FakeTwilio

    with FakeTwilio() as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake.auth_token)
        for name in ("TWILIO_EDGE", "TWILIO_REGION"):
            monkeypatch.delenv(name, raising=False)
        yield fake
        assert fake.problems == [], "requests that break Twilio's API contract"


def twilio_config(clinic: Clinic, fake: Any, **overrides: object) -> Path:
    """The clinic's config with SMS through the fake Twilio; `overrides` change [sms] keys."""
    keys: dict[str, object] = {"provider": "twilio", "from": "+12125550100",
                               "api_base_url": fake.url, "timeout_seconds": 1,
                               "rate_per_second": 1000, **overrides}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    config = clinic.folder / "twilio.toml"
    config.write_text(f"{clinic.config.read_text()}\n[sms]\n{lines}\n", encoding="utf-8")
    return config


def run_at(dispatcher: Dispatcher, moment: datetime,
           stop: threading.Event | None = None) -> DispatchCounts:
    """One dispatch pass with the dispatcher's clock standing at `moment`."""
    dispatcher.clock = FixedClock(moment)
    return dispatcher.run_once(stop)


def recover_at(dispatcher: Dispatcher, moment: datetime) -> int:
    """Stale-claim recovery with the dispatcher's clock standing at `moment`."""
    dispatcher.clock = FixedClock(moment)
    return dispatcher.recover_stale()
