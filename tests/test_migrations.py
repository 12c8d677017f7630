"""`aftercare init`: creates the schema, is harmless twice, keeps rows, matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from aftercare.db import head_revision
from conftest import Clinic


def test_init_creates_then_reports_up_to_date(clinic: Clinic, tmp_path) -> None:  # type: ignore[no-untyped-def]
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


def test_sqlite_runs_in_wal_mode(clinic: Clinic) -> None:
    assert clinic.rows("PRAGMA journal_mode") == [("wal",)]
