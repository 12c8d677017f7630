"""The staff console: server-rendered pages behind a login, on the CLI's library functions.

Each page module holds its handlers and its `routes`; this module puts them together.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aftercare.web.console import (
    account,
    auth,
    enroll,
    imports,
    inbox,
    messages,
    patient,
    patients,
    protocols,
    setup,
    today,
    users,
)
from aftercare.web.console.i18n import HERE

PAGES = (today, inbox, patients, patient, enroll, messages, protocols, imports, users, setup,
         account)


def on_start() -> None:
    """When the service starts: uploads a crashed service left behind are swept."""
    imports.uploads.sweep()


def routes() -> list[BaseRoute]:
    """Every console route: sign-in, the pages, and the stylesheet and scripts."""
    found: list[BaseRoute] = [
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for module in PAGES:
        found.extend(module.routes)
    return found
