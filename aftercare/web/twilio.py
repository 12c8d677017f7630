"""Twilio's webhooks: incoming SMS and delivery receipts, each verified by its signature."""

from __future__ import annotations

import logging
import os
import random
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from aftercare.app import App
from aftercare.receipts import apply_receipt
from aftercare.replies import Incoming, settle, store
from aftercare.web.limits import read_body

log = logging.getLogger(__name__)


async def verified_form(request: Request) -> dict[str, str]:
    """The request's form parameters, once its X-Twilio-Signature proves Twilio sent them
    to `web.public_url` + this path; 403 otherwise, 413 for a body over the limit."""
    app: App = request.app.state.aftercare
    body = await read_body(request, app.settings.web.max_body_bytes)
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the body is not a form") from None
    public_url = app.settings.web.public_url
    token = os.environ.get("TWILIO_AUTH_TOKEN", "")
    signature = request.headers.get("x-twilio-signature", "")
    # Twilio signs the URL it called, with its query string, as configured on the number.
    url = public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not public_url or not token:
        log.error("twilio webhook refused: web.public_url or TWILIO_AUTH_TOKEN is not set")
        raise HTTPException(403, "webhooks are not set up")
    if not signature or not RequestValidator(token).validate(url, params, signature):
        log.warning("twilio webhook refused: bad or missing signature on %s", request.url.path)
        raise HTTPException(403, "bad signature")
    return params


def _required(params: dict[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise HTTPException(400, f"missing form field(s): {', '.join(missing)}")
    return [params[name] for name in names]


async def status(request: Request) -> Response:
    """Delivery receipt: the message moves to delivered, undelivered or failed."""
    params = await verified_form(request)
    sid, state = _required(params, "MessageSid", "MessageStatus")
    code_text = params.get("ErrorCode", "")
    if code_text and not code_text.isdigit():
        raise HTTPException(400, "ErrorCode is not a number")
    app: App = request.app.state.aftercare

    def apply() -> None:
        with app.db() as db:
            apply_receipt(db, app.planner(), app.settings, sid, state.lower(),
                          int(code_text) if code_text else None, random.Random(),
                          to=params.get("To") or None)

    await run_in_threadpool(apply)
    return Response(status_code=204)


async def incoming(request: Request) -> Response:
    """An SMS to the clinic's number: stored first, then acted on; TwiML answers it."""
    params = await verified_form(request)
    (sid,) = _required(params, "MessageSid")
    app: App = request.app.state.aftercare
    incoming = Incoming(provider_id=sid, from_number=params.get("From"),
                        to_number=params.get("To"), body=params.get("Body", ""))

    def receive() -> str | None:
        # Stored and committed before anything else: a crash after this loses nothing;
        # Twilio's retry, or the sender's settling of unhandled replies, acts on it.
        with app.db() as db:
            reply_id = store(db, incoming, app.clock()).id
        assert reply_id is not None
        return settle(app, reply_id, queue=False)[1]

    answer = await run_in_threadpool(receive)
    twiml = MessagingResponse()
    if answer:
        twiml.message(answer)
    return Response(str(twiml), media_type="application/xml")
