"""The HTTP side of `aftercare serve`: Twilio's webhooks, unsubscribe links, the staff console."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aftercare import metrics
from aftercare.app import App
from aftercare.daemon import Sender
from aftercare.web import console, twilio, unsubscribe
from aftercare.web.console.base import SECURITY_HEADERS, SecurityHeaders

log = logging.getLogger(__name__)


def create_app(app: App, *, send: bool = False) -> Starlette:
    """The ASGI application; with `send`, it also runs the dispatch scheduler while it lives
    (the caller checks the setup first, as `aftercare serve` does).

    Database work stays synchronous and runs in Starlette's thread pool.
    """

    @asynccontextmanager
    async def lifespan(_web: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(console.on_start)
        sender = Sender.start(app, check_setup=False) if send else None
        _web.state.sender = sender  # its heartbeat tells /healthz whether it makes progress
        if sender is not None:
            log.info("service started: %s", sender.describe())
        try:
            yield
        finally:
            if sender is not None:
                # After the server stopped taking requests and answered those in flight:
                # finish the send in flight, give back the claims not started.
                sender.shutdown()
                log.info("service stopped")

    def heartbeat() -> metrics.Heartbeat | None:
        sender: Sender | None = getattr(web.state, "sender", None)
        return sender.heartbeat if sender is not None else None

    # No login on either, like Twilio's endpoints: neither says anything about a patient.
    # The reverse proxy passes /healthz on and keeps /metrics to the monitoring host.
    async def health(_request: Request) -> Response:
        status, body = await run_in_threadpool(metrics.health, app, heartbeat())
        return Response(metrics.health_json(body), status_code=status,
                        media_type="application/json")

    async def scrape(_request: Request) -> Response:
        registry = metrics.registry_for(app, heartbeat())
        page, content_type = await run_in_threadpool(metrics.metrics_page, registry)
        return Response(page, media_type=content_type)

    async def crashed(_request: Request, exc: Exception) -> Response:
        # Starlette answers this outside every middleware: the headers are added here.
        log.error("request failed: %s", type(exc).__name__)
        return PlainTextResponse("Internal Server Error: the error is in the service's log.\n",
                                 status_code=500, headers=SECURITY_HEADERS)

    web = Starlette(routes=[
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        Route("/twilio/sms", twilio.incoming, methods=["POST"]),
        Route("/twilio/status", twilio.status, methods=["POST"]),
        Route("/unsubscribe/{token}", unsubscribe.form, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe.confirm, methods=["POST"]),
        *console.routes(),
    ], middleware=[Middleware(SecurityHeaders)], exception_handlers={500: crashed},
        lifespan=lifespan)
    web.state.aftercare = app
    web.state.sender = None
    return web
