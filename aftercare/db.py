"""Engine creation, schema migrations and the schema check every command runs."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlmodel import create_engine

from aftercare.errors import UserError
from aftercare.resources import MIGRATIONS

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_MS = 30_000
# Each worker of a pass (up to sms.concurrency + email.concurrency, 64 + 32) holds a
# connection while it checks and records a message, beside the scheduler's jobs and the
# web requests: SQLAlchemy's default 5 + 10 would make workers queue for a connection.
POOL = {"pool_size": 10, "max_overflow": 100}


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and write-ahead locking."""
    # hide_parameters: errors and logs must never carry phone numbers or message text.
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, hide_parameters=True, **POOL)
    in_memory = url in ("sqlite://", "sqlite:///:memory:")  # one connection, no pool to size
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000},
                           hide_parameters=True, **({} if in_memory else POOL))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Erased patient data (`patient forget`) is overwritten on disk, not just unlinked.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a read that later upgrades to a write fails at once
        # with SQLITE_BUSY under WAL instead of waiting, which would break a claim while
        # the CLI enrolls. IMMEDIATE makes the busy timeout apply.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def flush_to_disk(engine: Engine) -> None:
    """Write SQLite's log back into the database file and empty it (after erasing data)."""
    if engine.dialect.name == "sqlite":
        # Raw connection: a checkpoint cannot run inside the BEGIN IMMEDIATE the engine adds.
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()


def _alembic_config(engine: Engine) -> Config:
    # Alembic is imported by the commands that migrate, not by every start (~0.2 s).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def migrate(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Create or upgrade the schema to `revision` (the newest by default); (before, after)."""
    from alembic import command

    config = _alembic_config(engine)
    before = current_revision(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    after = current_revision(engine)
    assert after is not None  # just upgraded to it
    return before, after


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None when it was never initialised."""
    # Alembic's own table read directly: the check every unit of work makes stays one query.
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except OperationalError as exc:
        raise UserError("database", f"cannot open {engine.url}: {exc.orig}") from None
    if len(versions) > 1:
        raise UserError("database", f"{engine.url} has several schema revisions; run "
                        "`aftercare init`")
    return versions[0][0] if versions else None


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*['\"]?([^'\"\s]+)['\"]?",
                       re.MULTILINE)


@cache  # the migration files are part of the release: read once per process
def head_revision() -> str:
    """The newest schema revision this release ships: the one no migration follows.

    Read from the files' `revision`/`down_revision` lines rather than through Alembic,
    whose import alone costs a command more than its whole check (tests/test_start_cost.py
    compares the two).
    """
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            (revisions if name == "revision" else followed).add(value)
    heads = revisions - followed
    assert len(heads) == 1, f"migrations must have one head, found {sorted(heads)}"
    return heads.pop()


def require_schema(engine: Engine) -> None:
    """Stop with a clear message unless the database is at this release's schema."""
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not Path(database).exists():
        # Connecting would create an empty file; a mistaken path must leave nothing behind.
        raise UserError("database", f"{database} does not exist; run `aftercare init` to create it")
    current = current_revision(engine)
    if current is None:
        raise UserError("database", f"{engine.url} is not initialised; run `aftercare init`")
    if current != head_revision():
        raise UserError(
            "database", f"{engine.url} is at schema {current}, this release needs "
            f"{head_revision()}; run `aftercare init` to upgrade"
        )
