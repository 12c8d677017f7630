"""Today: what needs a person now (being built)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aftercare.web.console.base import Page, page


@page()
def today_page(current: Page) -> Response:
    return current.render("today.html", nav="today")


routes: list[BaseRoute] = [Route("/", today_page, methods=["GET"])]
