"""`aftercare init`: creates the schema, is harmless twice, keeps rows, matches the models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from aftercare.db import head_revision, migrate
from aftercare.resources import MIGRATIONS
from conftest import Clinic

pytestmark = pytest.mark.backends  # the same tests on SQLite and PostgreSQL


def test_init_creates_then_reports_up_to_date(clinic: Clinic, tmp_path: Path) -> None:
    config = tmp_path / "new.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'new.db'}'\n")
    first = clinic.run("--config", str(config), "init")
    assert first.exit_code == 0 and "created" in first.stdout
    second = clinic.run("--config", str(config), "init")
    assert second.exit_code == 0 and "up to date" in second.stdout


def test_init_again_keeps_every_row(clinic: Clinic) -> None:
    clinic.json("patient", "add", "--name", "Jane Doe", "--phone", "+12125550123", "--ref", "J1")
    clinic.json("--now", "2026-03-02T11:00-05:00", "enroll", "J1", "--treatment", "cellulite",
                "--session-at", "2026-03-02T10:30")
    before = [clinic.count(t) for t in ("patient", "course", "session", "message")]
    assert clinic.run("init").exit_code == 0
    assert [clinic.count(t) for t in ("patient", "course", "session", "message")] == before
    assert clinic.rows("SELECT version_num FROM alembic_version") == [(head_revision(),)]


def test_migrations_build_exactly_the_models_schema(clinic: Clinic) -> None:
    # A model change without a migration would ship a schema clinics cannot upgrade to.
    with clinic.app().engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode(clinic: Clinic) -> None:
    assert clinic.rows("PRAGMA journal_mode") == [("wal",)]


# Released migrations never change: a database stamped at a revision must have exactly the
# schema that revision's file made. A new migration adds its line here when it is committed.
RELEASED = {
    "0001_initial_schema.py": "bb48f5af69b0adfe3c92a19ea873c31da0ef113af7f6ec151dd7a6f90843d69b",
    "0002_courses_and_history.py":
        "e17dd10170bad0490db0354b1665841a434469855517e7f46db664d19fb3fba3",
    "0003_claim_tokens.py": "b61f039bd22e5c48c21f93f04239b8c6bd788fdb2077df478442b03aa311a358",
    "0004_replies_and_receipts.py":
        "d91c09aa3e22b433c172833887a6b157b38323d342f104330bc552b2042d1156",
    "0005_notices_checkins_polling.py":
        "94d7cfb1ff84e69ba9a4752508f1d25d08394b1c132d1cec399771f7b15a3302",
    "0006_staff_console.py": "de12fd8b0b51f984af967f1624b6e8bbdae657626c0650d0766a46690a76877c",
    "0007_console_indexes.py": "f2b9b5966a16927ad6aacc0e451b7dc84b525eea7739fb925367ce5479aef8ef",
    "0008_notice_request_key.py": "daf66c0ccd49d2b56801e6080ad25d8949ea79452dd078f59e7aed7683a9130c",
    "0009_send_pace.py": "b16b35ea9ebe8e7d8cad34eefcd48126246cd64b7429b59f0379991b250caea0",
}


def test_released_migrations_never_change() -> None:
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
             for path in (MIGRATIONS / "versions").glob("*.py")}
    changed = sorted(name for name, digest in RELEASED.items() if files.get(name) != digest)
    assert changed == [], "released migrations were edited; revert them and add a new one"
    unlisted = sorted(set(files) - set(RELEASED))
    assert unlisted == [], "add the new migration's sha256 to RELEASED when committing it"


@pytest.mark.sqlite_only  # rebuilds the database file at an old schema
def test_a_database_from_the_first_0002_gains_session_moves(clinic: Clinic) -> None:
    # The first release of 0002 had no session.moves; such databases are stamped 0002.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{clinic.db_path}{suffix}").unlink(missing_ok=True)
    migrate(clinic.app().engine, "0002")
    clinic.rows("ALTER TABLE session DROP COLUMN moves")
    refused = clinic.run("messages")
    assert refused.exit_code == 2 and "run `aftercare init` to upgrade" in refused.stderr
    assert clinic.run("init").exit_code == 0
    columns = {name for _cid, name, *_ in clinic.rows("PRAGMA table_info(session)")}
    assert "moves" in columns
    assert clinic.run("messages").exit_code == 0
