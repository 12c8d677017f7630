"""The PostgreSQL test server: used when it can start, skipped when not, required in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pg_kit import ENV_BIN, ENV_REQUIRE, ENV_URL, Server

HERE = Path(__file__)


def test_the_server_answers(postgres_server: Server) -> None:
    url = postgres_server.create()
    try:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    finally:
        postgres_server.drop(url)


def _probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """This file's first test in a fresh pytest, with no server to be found."""
    environment = {k: v for k, v in os.environ.items() if k not in (ENV_URL, ENV_REQUIRE)}
    empty = tmp_path / "no-binaries"
    empty.mkdir(exist_ok=True)
    environment.update({ENV_BIN: str(empty), **env})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           f"{HERE}::test_the_server_answers"], capture_output=True, text=True,
                          env=environment, cwd=HERE.parent.parent, timeout=120, check=False)


def test_without_a_server_the_tests_are_skipped_with_the_reason(tmp_path: Path) -> None:
    done = _probe(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "PostgreSQL tests need a server" in done.stdout and "has no pg_ctl" in done.stdout


def test_in_ci_a_missing_server_fails_the_run(tmp_path: Path) -> None:
    done = _probe(tmp_path, **{ENV_REQUIRE: "1"})
    assert done.returncode == 1, done.stdout
    assert "PostgreSQL is required here" in done.stdout

