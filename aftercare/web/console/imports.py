"""Import (admin): upload a day's CSV, check it (nothing written), then import all of it or
only its good rows, with the same `csv_import` functions as `aftercare import`."""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path, PurePath

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.csv_import import COLUMNS, ImportReport, import_data
from aftercare.errors import UserError
from aftercare.web.console.base import Page, page

log = logging.getLogger(__name__)

KEEP_SECONDS = 3600  # an upload not imported within the hour is deleted
TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


class Uploads:
    """Uploaded files between their check and their import: in one private folder of the
    service's user (mode 0700), under a random name tied to the staff session; deleted once
    imported, and by the next sweep after an hour, even those of a service that crashed."""

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder or Path(tempfile.gettempdir()) / f"aftercare-imports-{os.getuid()}"
        self._lock = threading.Lock()

    def _dir(self) -> Path:
        with self._lock:
            self._folder.mkdir(mode=0o700, exist_ok=True)
            info = self._folder.stat()
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                # Someone else's folder, or one others can read: patient data never goes there.
                raise UserError("file", f"{self._folder} is not private to this service; "
                                "remove it and try again")
            return self._folder

    def _path(self, session_id: int, token: str) -> Path | None:
        if not TOKEN.fullmatch(token):  # never a path of the sender's choosing
            return None
        return self._dir() / f"{session_id}-{token}.csv"

    def keep(self, session_id: int, data: bytes) -> str:
        """Store `data` for this session; the token that finds it again."""
        self.sweep()
        token = secrets.token_urlsafe(24)
        path = self._path(session_id, token)
        assert path is not None
        path.touch(mode=0o600)
        path.write_bytes(data)
        return token

    def load(self, session_id: int, token: str) -> bytes | None:
        """The data kept under `token` for this session; None if unknown or expired."""
        path = self._path(session_id, token)
        try:
            if path is None or path.stat().st_mtime < time.time() - KEEP_SECONDS:
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, session_id: int, token: str) -> None:
        path = self._path(session_id, token)
        if path is not None:
            path.unlink(missing_ok=True)

    def sweep(self) -> None:
        """Delete the uploads left unimported for more than KEEP_SECONDS."""
        limit = time.time() - KEEP_SECONDS
        if not self._folder.is_dir():  # nothing was ever uploaded here: nothing to make
            return
        for path in self._dir().glob("*.csv"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass


uploads = Uploads()


def _shown_name(name: str | None) -> str:
    """The uploaded file's own name (no folders), for messages about it."""
    return PurePath((name or "").replace("\\", "/")).name[:120] or "upload.csv"


def _form(current: Page, status: int = 200) -> Response:
    return current.render("import.html", status=status, nav="import", columns=COLUMNS,
                          limit_mb=_limit(current) // (1024 * 1024))


def _limit(current: Page) -> int:
    return current.app.settings.web.max_upload_bytes


def _checked(current: Page, report: ImportReport, token: str, name: str,
             status: int = 200) -> Response:
    return current.render("import_check.html", status=status, nav="import", report=report,
                          token=token, filename=name, good=report.imported + report.unchanged)


@page("admin")
def import_page(current: Page) -> Response:
    """The upload form."""
    return _form(current)


@page("admin", upload=True)
def import_check(current: Page) -> Response:
    """Check the uploaded file: every bad row with its line and column; nothing written."""
    upload = current.upload("file")
    if upload is None or not upload.filename:
        current.refuse(UserError("file", current._("Choose the CSV file to import.")))
        return _form(current, status=400)
    data = upload.file.read(_limit(current) + 1)
    if len(data) > _limit(current):
        current.refuse(UserError("file", current._(
            "This file is larger than the import accepts; split it into smaller files.")))
        return _form(current, status=400)
    name = _shown_name(upload.filename)
    try:
        report = import_data(current.app, data, name, dry_run=True)
    except UserError as error:
        current.refuse(UserError("file", error.problem))
        return _form(current, status=400)
    token = uploads.keep(current.session_id, data)
    return _checked(current, report, token, name)


@page("admin")
def import_apply(current: Page) -> Response:
    """Import the checked file: all of it, or only its good rows."""
    token, name = current.field("token"), _shown_name(current.field("filename"))
    skip_invalid = current.field("mode") == "good"
    data = uploads.load(current.session_id, token)
    if data is None:
        current.refuse(UserError("file", current._(
            "This upload was already imported or has expired; upload the file again.")))
        return _form(current, status=400)
    try:
        report = import_data(current.app, data, name, skip_invalid=skip_invalid,
                             actor=current.user.email)
    except UserError as error:
        current.refuse(UserError("file", error.problem))
        return _form(current, status=400)
    if report.problems and not skip_invalid:
        # The database changed since the check: nothing was written. Check again, so the
        # page says what importing only the good rows would now do.
        report = import_data(current.app, data, name, dry_run=True)
        return _checked(current, report, token, name, status=400)
    uploads.drop(current.session_id, token)
    log.info("console import by account %s: %d row(s), %d imported, %d skipped",
             current.user.id, report.rows, report.imported, report.bad_rows)
    return current.render("import_done.html", nav="import", report=report, filename=name)


routes: list[BaseRoute] = [
    Route("/import", import_page, methods=["GET"]),
    Route("/import", import_check, methods=["POST"]),
    Route("/import/apply", import_apply, methods=["POST"]),
]
