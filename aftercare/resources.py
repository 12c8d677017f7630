"""Where the packaged protocols, templates and migrations are found."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# In a source checkout (or editable install) the data sits at the top of the repository.
_SOURCE = {"templates": _PACKAGE.parent / "templates",
           "protocols": _PACKAGE.parent / "config" / "protocols"}


def data_dir(name: str) -> Path:
    """The folder of packaged `templates` or `protocols`, installed or in a checkout."""
    installed = _PACKAGE / "_data" / name
    return installed if installed.is_dir() else _SOURCE[name]


MIGRATIONS = _PACKAGE / "migrations"
