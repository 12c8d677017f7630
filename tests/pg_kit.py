"""A throw-away PostgreSQL server for the tests: the one CI started, or one started here.

CI (`.ci/run`) starts a cluster and names it in AFTERCARE_TEST_POSTGRES_URL. Elsewhere the
tests start their own with `initdb`/`pg_ctl` (as the `postgres` user when run as root) in a
temporary folder on a free port, and skip PostgreSQL only when no server can be started.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_URL = "AFTERCARE_TEST_POSTGRES_URL"  # a server to use: its maintenance database's URL
ENV_REQUIRE = "AFTERCARE_REQUIRE_POSTGRES"  # "1": no server fails the run instead of skipping
ENV_BIN = "AFTERCARE_TEST_POSTGRES_BIN"  # a folder with initdb and pg_ctl (else searched)


class NoServer(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def _bin_dir() -> Path:
    chosen = os.environ.get(ENV_BIN)
    if chosen:
        if not (Path(chosen) / "pg_ctl").exists():
            raise NoServer(f"{ENV_BIN}={chosen} has no pg_ctl")
        return Path(chosen)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda path: int(Path(path).parent.parent.name))
    if not versions:
        raise NoServer("no PostgreSQL server binaries (pg_ctl) found; install postgresql")
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """Run `command` as `postgres` when we are root (initdb refuses to run as root)."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *command]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)]


@contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster in a temporary folder on a free port; yield its base URL; remove it."""
    binaries = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="aftercare-pg-"))
    data = folder / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        port = _free_port()
        _run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "--auth=trust",
                              "-U", "postgres", "--encoding=UTF8", "--locale=C"]), "initdb")
        options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
                              "-l", str(folder / "server.log"), "-w", "start"]), "pg_ctl start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m",
                                            "immediate", "-w", "stop"]),
                           capture_output=True, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoServer(f"{what} could not run: {exc}") from None
    if done.returncode != 0:
        raise NoServer(f"{what} failed: {(done.stderr or done.stdout).strip()[-300:]}")


class Server:
    """One running server; hands out fresh databases by name."""

    def __init__(self, base_url: str) -> None:
        from sqlalchemy import create_engine

        self.base_url = base_url
        # Autocommit: CREATE/DROP DATABASE cannot run inside a transaction.
        self._admin = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=_null())

    def create(self) -> str:
        """A new empty database's URL."""
        return self.create_from("")

    def create_from(self, template: str) -> str:
        """A new database's URL: a copy of the database at `template` (a URL), or empty."""
        from sqlalchemy import text

        name = f"aftercare_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        return self.base_url.rsplit("/", 1)[0] + f"/{name}"

    def drop(self, url: str) -> None:
        """Remove a database `create` made (its connections are ended first)."""
        from sqlalchemy import text

        name = url.rsplit("/", 1)[1]
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self._admin.dispose()


def _null() -> type:
    from sqlalchemy.pool import NullPool

    return NullPool
