"""The fake Twilio server honours Twilio's OpenAPI contract, as seen by the real twilio client."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from fakes import twilio as fake_twilio_module
from fakes.twilio import (
    DROP_AFTER_STORE,
    DROP_BEFORE_STORE,
    RATE_LIMITED,
    SERVER_ERROR,
    SLOW_REPLY,
    SPEC_PATH,
    FakeTwilio,
    Faults,
    bad_gateway_html,
    contract,
    contract_drift,
    error,
    rate_limited,
    segments,
    server_error,
    slow,
    spec_contract,
)
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

PATIENT = "+12125550123"
OTHER_PATIENT = "+12125550199"
CLINIC = "+12125550100"
SERVICE = "MG" + "0" * 32
RFC2822 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000")


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


def _client(fake: FakeTwilio, timeout: float = 2.0, password: str | None = None) -> Client:
    client = Client(
        fake.account_sid, password or fake.auth_token, http_client=TwilioHttpClient(timeout=timeout)
    )
    client.api.base_url = fake.url  # the routing the service relies on
    return client


def _send(client: Client, to: str = PATIENT, **kwargs: Any) -> MessageInstance:
    kwargs.setdefault("from_", CLINIC)
    return client.messages.create(to=to, body=kwargs.pop("body", "Avoid sun today."), **kwargs)


def _shape_problems(message: dict[str, Any]) -> list[str]:
    """Where ``message`` breaks the types, enums and patterns of the contract's message properties."""
    # type[Any]: with the inferred type[object], the isinstance below would narrow `value`
    # to object and the pattern check could not take it.
    python_types: dict[str, type[Any]] = {"string": str, "integer": int, "object": dict}
    found = []
    for key, schema in contract().message_properties.items():
        value = message[key]
        if value is None:
            found += [] if schema.get("nullable") else [f"{key} is null"]
        elif not isinstance(value, python_types[schema["type"]]):
            found.append(f"{key}={value!r} is not a JSON {schema['type']}")
        elif "enum" in schema and value not in schema["enum"]:
            found.append(f"{key}={value!r} is not one of {schema['enum']}")
        elif "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{key}={value!r} does not match {schema['pattern']}")
    return found


def _post(fake: FakeTwilio, form: dict[str, str], **kwargs: Any) -> requests.Response:
    auth = kwargs.pop("auth", (fake.account_sid, fake.auth_token))
    path = kwargs.pop("path", fake.messages_path)
    return requests.post(fake.url + path, data=form, auth=auth, timeout=2, **kwargs)


# -------------------------------------------------------------------------------------- contract and create


def test_table_matches_the_spec() -> None:
    # The one test that reads ../shared: it keeps tests/fakes/twilio_contract.py honest (CI always has it).
    if not SPEC_PATH.is_file():
        pytest.skip(
            f"../shared/twilio-oai not present: {SPEC_PATH} is missing, so the Messages table in "
            "tests/fakes/twilio_contract.py is not compared with Twilio's spec here (CI compares it)"
        )
    assert contract_drift(contract(), spec_contract()) == []


def test_drift_is_reported() -> None:
    table = contract()
    fields = {name: schema for name, schema in table.create_fields.items() if name != "Body"}
    changed = dataclasses.replace(
        table,
        create_fields=fields,
        list_params={**table.list_params, "Page": {"type": "string"}},
        message_properties={**table.message_properties, "tags": {"type": "object"}},
        list_keys=table.list_keys[:-1],
    )

    assert contract_drift(table, table) == []
    assert contract_drift(changed, table) == [
        "create_fields['Body'] is in the spec, not in the table",
        "list_params['Page']: the table has {'type': 'string'}, the spec {'type': 'integer', 'minimum': 0}",
        "message_properties['tags'] is in the table, not in the spec",
        f"list_keys: the table has {table.list_keys[:-1]}, the spec {table.list_keys}",
    ]


def test_the_fake_never_reads_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh clone has no ../shared, and every other test here must still run there.
    def unreachable(*args: object) -> None:
        raise AssertionError("the fake read the spec")

    monkeypatch.setattr(fake_twilio_module, "load_spec", unreachable)
    with FakeTwilio() as server:
        assert _send(_client(server)).sid == server.created[0]["sid"]
        assert server.problems == []


def test_contract_table_has_what_the_fake_relies_on() -> None:
    table = contract()
    assert {"To", "From", "MessagingServiceSid", "Body", "StatusCallback", "MediaUrl"} <= set(
        table.create_fields
    )
    assert table.create_required == ("To",)
    assert set(table.list_params) == {
        "To",
        "From",
        "DateSent",
        "DateSent<",
        "DateSent>",
        "PageSize",
        "Page",
        "PageToken",
    }
    assert "queued" in table.status_enum


def test_create_parses_into_a_message_instance(fake: FakeTwilio, capfd: pytest.CaptureFixture[str]) -> None:
    message = _send(_client(fake), status_callback="https://clinic.example/twilio/status")

    assert isinstance(message, MessageInstance)
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid or "")
    assert message.status == "queued"
    assert message.to == PATIENT
    assert message.from_ == CLINIC
    assert message.direction == "outbound-api"
    assert isinstance(message.date_sent, datetime)
    [stored] = fake.created
    assert stored["sid"] == message.sid
    assert set(stored) == set(contract().message_keys)
    assert stored["account_sid"] == fake.account_sid
    assert stored["api_version"] == "2010-04-01"
    assert stored["num_segments"] == "1"
    assert stored["uri"] == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}.json"
    for key in ("date_created", "date_updated", "date_sent"):
        assert RFC2822.fullmatch(stored[key]), stored[key]
    assert fake.messages_to(PATIENT) == [stored]
    assert fake.messages_to(OTHER_PATIENT) == []
    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", fake.messages_path, 201)
    assert request.form == {
        "To": PATIENT,
        "From": CLINIC,
        "Body": "Avoid sun today.",
        "StatusCallback": "https://clinic.example/twilio/status",
    }
    assert fake.accepted_event.is_set()
    assert fake.problems == []
    assert capfd.readouterr().err == ""


def test_raw_201_body_has_exactly_the_spec_properties(fake: FakeTwilio) -> None:
    response = _post(fake, {"To": PATIENT, "MessagingServiceSid": SERVICE, "Body": "é" * 71})

    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == set(contract().message_keys)
    assert _shape_problems(body) == []
    assert body["from"] is None
    assert body["messaging_service_sid"] == SERVICE
    assert body["num_segments"] == "1"  # é is in the GSM-7 alphabet
    assert fake.problems == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("ą" * 70, 1),
        ("ą" * 71, 2),
    ],
)
def test_segments(body: str, expected: int) -> None:
    assert segments(body) == expected


@pytest.mark.parametrize(
    ("form", "complaint"),
    [
        ({"To": PATIENT, "From": CLINIC, "Body": "hi", "Bogus": "x"}, "'Bogus' is not defined"),
        ({"From": CLINIC, "Body": "hi"}, "'To' is missing"),
        ({"To": PATIENT, "Body": "hi"}, "'From' or 'MessagingServiceSid'"),
        ({"To": PATIENT, "From": CLINIC}, "'Body', 'ContentSid' or 'MediaUrl'"),
        ({"To": PATIENT, "From": CLINIC, "Body": ""}, "'Body', 'ContentSid' or 'MediaUrl'"),
        ({"To": "2125550123", "From": CLINIC, "Body": "hi"}, "not an E.164"),
        ({"To": PATIENT, "From": CLINIC, "Body": "hi", "StatusCallback": "/status"}, "not an absolute"),
        ({"To": PATIENT, "From": CLINIC, "Body": "hi", "ProvideFeedback": "yes"}, "not a boolean"),
        ({"To": PATIENT, "From": CLINIC, "Body": "hi", "ValidityPeriod": "1h"}, "not an integer"),
        ({"To": PATIENT, "MessagingServiceSid": "MG123", "Body": "hi"}, "does not match"),
        ({"To": PATIENT, "From": CLINIC, "Body": "hi", "ContentRetention": "keep"}, "not one of"),
    ],
)
def test_invalid_create_is_rejected_and_recorded(
    fake: FakeTwilio, form: dict[str, str], complaint: str
) -> None:
    response = _post(fake, form)

    assert response.status_code == 400
    assert response.json()["code"] == 20001
    assert fake.created == []
    assert any(complaint in problem for problem in fake.problems), fake.problems
    assert fake.requests[-1].status == 400


def test_json_body_is_rejected(fake: FakeTwilio) -> None:
    response = requests.post(
        fake.url + fake.messages_path,
        json={"To": PATIENT, "From": CLINIC, "Body": "hi"},
        auth=(fake.account_sid, fake.auth_token),
        timeout=2,
    )
    assert response.status_code == 400
    assert any("Content-Type" in problem for problem in fake.problems)


def test_client_field_missing_from_the_spec_is_rejected(fake: FakeTwilio) -> None:
    # twilio 9.13 knows MessageIntent, the spec (twilio-oai d50069b) does not: the fake sides with the spec.
    with pytest.raises(TwilioRestException) as raised:
        _send(_client(fake), message_intent="notifications")
    assert (raised.value.status, raised.value.code) == (400, 20001)
    assert any("'MessageIntent'" in problem for problem in fake.problems)


def test_wrong_auth_is_401(fake: FakeTwilio) -> None:
    with pytest.raises(TwilioRestException) as raised:
        _send(_client(fake, password="not-the-token"))

    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert fake.created == []
    assert fake.requests[-1].status == 401
    assert any("401" in problem for problem in fake.problems)


def test_unknown_path_is_404(fake: FakeTwilio) -> None:
    other = "AC" + "f" * 32
    response = _post(
        fake,
        {"To": PATIENT, "From": CLINIC, "Body": "hi"},
        path=f"/2010-04-01/Accounts/{other}/Messages.json",
    )
    assert response.status_code == 404
    assert response.json()["code"] == 20404

    client = Client(fake.account_sid, fake.auth_token, account_sid=other)
    client.api.base_url = fake.url
    with pytest.raises(TwilioRestException) as raised:
        _send(client)
    assert raised.value.status == 404
    assert len(fake.problems) == 2
    assert fake.created == []


def test_edge_and_region_settings_would_rewrite_the_url(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    message = _send(fake.client(timeout=2))  # attach() clears edge/region
    assert message.sid == fake.created[0]["sid"]


# -------------------------------------------------------------------------------------- scripted failures


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        (error(400, 21211, "Invalid 'To' Phone Number"), 400, 21211),
        (error(400, 21610, "Attempt to send to unsubscribed recipient"), 400, 21610),
        (rate_limited(), 429, 20429),
        (server_error(), 500, 20500),
        (bad_gateway_html(), 502, 502),  # no JSON body: the client uses the HTTP status as the code
    ],
)
def test_scripted_outcome_raises_twilio_rest_exception(
    fake: FakeTwilio, outcome: Any, status: int, code: int
) -> None:
    client = _client(fake)
    fake.script(outcome)

    with pytest.raises(TwilioRestException) as raised:
        _send(client)

    assert (raised.value.status, raised.value.code, raised.value.method) == (status, code, "POST")
    assert raised.value.uri == f"/Accounts/{fake.account_sid}/Messages.json"
    assert raised.value.msg.startswith("Unable to create record")
    assert fake.created == []
    assert fake.problems == []
    assert _send(client).sid == fake.created[0]["sid"]  # the queue is consumed: the next create succeeds


def test_bad_gateway_is_html(fake: FakeTwilio) -> None:
    fake.script(bad_gateway_html())
    response = _post(fake, {"To": PATIENT, "From": CLINIC, "Body": "hi"})
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text


def test_script_is_consumed_in_order(fake: FakeTwilio) -> None:
    client = _client(fake)
    fake.script(rate_limited(), server_error())
    statuses = []
    for _ in range(3):
        try:
            _send(client)
            statuses.append(201)
        except TwilioRestException as exc:
            statuses.append(exc.status)
    assert statuses == [429, 500, 201]
    assert len(fake.created) == 1


def test_slow_reply_times_out_but_twilio_still_accepts(fake: FakeTwilio) -> None:
    fake.script(slow(0.8))
    started = time.monotonic()

    with pytest.raises(requests.exceptions.ReadTimeout) as raised:  # not wrapped in a TwilioException
        _send(_client(fake, timeout=0.5))

    assert isinstance(raised.value, requests.exceptions.Timeout)
    assert not isinstance(raised.value, TwilioException)
    assert time.monotonic() - started < 0.75
    # the duplicate hazard: the message is created after the client gave up
    assert fake.wait_until(lambda: len(fake.created) == 1, timeout=2)
    assert fake.problems == []


def test_down_refuses_connections_and_up_restores(fake: FakeTwilio) -> None:
    client = _client(fake)
    url = fake.url
    fake.down()

    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        _send(client)
    assert not isinstance(raised.value, TwilioException)
    assert "Connection refused" in str(raised.value)
    assert fake.url == url
    assert fake.requests == []

    fake.up()
    assert fake.url == url
    assert _send(client).sid == fake.created[0]["sid"]


# -------------------------------------------------------------------------------------- hold and stop


def _send_in_thread(client: Client) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["message"] = _send(client)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_hold_blocks_the_reply_after_accepting(fake: FakeTwilio) -> None:
    fake.hold = threading.Event()
    thread, result = _send_in_thread(_client(fake))

    assert fake.accepted_event.wait(2)
    assert len(fake.created) == 1
    assert fake.requests[-1].status is None
    thread.join(0.1)
    assert thread.is_alive() and result == {}

    fake.hold.set()
    thread.join(2)
    assert result["message"].sid == fake.created[0]["sid"]
    assert fake.requests[-1].status == 201


def test_stop_releases_a_held_request(fake: FakeTwilio) -> None:
    fake.hold = threading.Event()
    thread, result = _send_in_thread(_client(fake))
    assert fake.accepted_event.wait(2)

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1
    thread.join(2)
    assert result["message"].sid == fake.created[0]["sid"]


def test_stop_interrupts_slow(fake: FakeTwilio) -> None:
    fake.script(slow(30))
    thread, result = _send_in_thread(_client(fake, timeout=10))
    assert fake.wait_until(lambda: len(fake.requests) == 1)

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1
    thread.join(2)
    assert not thread.is_alive()
    assert isinstance(result["error"], requests.exceptions.ConnectionError)  # dropped without a reply
    assert fake.created == []


# -------------------------------------------------------------------------------------- list


@pytest.fixture
def history() -> Iterator[tuple[FakeTwilio, dict[str, str]]]:
    """Four messages sent on 1, 2 and 3 March 2025 (two on the 3rd, an hour apart)."""
    now = [datetime(2025, 3, 1, 15, 0, tzinfo=UTC)]
    with FakeTwilio(clock=lambda: now[0]) as fake:
        client = _client(fake)
        sids = {}
        for name, to, when in [
            ("a", PATIENT, datetime(2025, 3, 1, 15, 0, tzinfo=UTC)),
            ("b", OTHER_PATIENT, datetime(2025, 3, 2, 15, 0, tzinfo=UTC)),
            ("c", PATIENT, datetime(2025, 3, 3, 15, 0, tzinfo=UTC)),
            ("d", PATIENT, datetime(2025, 3, 3, 16, 0, tzinfo=UTC)),
        ]:
            now[0] = when
            sids[name] = _send(client, to=to).sid or ""
        yield fake, sids


def _sids(messages: list[MessageInstance], sids: dict[str, str]) -> list[str]:
    names = {sid: name for name, sid in sids.items()}
    return [names[m.sid or ""] for m in messages]


def test_list_filters_by_to_and_date_sent_after(history: tuple[FakeTwilio, dict[str, str]]) -> None:
    fake, sids = history
    client = _client(fake)

    found = client.messages.list(to=PATIENT, date_sent_after=datetime(2025, 3, 3, 15, 0, tzinfo=UTC))

    assert _sids(found, sids) == ["d", "c"]  # newest first; the bound is inclusive ("on or after")
    assert fake.requests[-1].query == {"To": PATIENT, "DateSent>": "2025-03-03T15:00:00Z"}
    assert fake.problems == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"to": PATIENT}, ["d", "c", "a"]),
        ({"to": OTHER_PATIENT}, ["b"]),
        ({"from_": CLINIC}, ["d", "c", "b", "a"]),
        ({"date_sent_after": date(2025, 3, 2)}, ["d", "c", "b"]),  # a date goes out as 2025-03-02T00:00:00Z
        ({"date_sent_after": datetime(2025, 3, 3, 15, 30, tzinfo=UTC)}, ["d"]),
        ({"date_sent_before": datetime(2025, 3, 2, 15, 0, tzinfo=UTC)}, ["b", "a"]),
        ({"date_sent": "2025-03-03"}, ["d", "c"]),  # a plain string is sent as is: a whole day
        ({"date_sent": datetime(2025, 3, 3, 16, 0, tzinfo=UTC)}, ["d"]),
        ({"to": PATIENT, "date_sent_after": "2025-03-02", "date_sent_before": "2025-03-03"}, ["d", "c"]),
        ({"to": "+12125550000"}, []),
    ],
)
def test_list_filters(
    history: tuple[FakeTwilio, dict[str, str]], filters: dict[str, Any], expected: list[str]
) -> None:
    fake, sids = history
    assert _sids(_client(fake).messages.list(**filters), sids) == expected
    assert fake.problems == []


def test_list_pages_through_next_page_uri(history: tuple[FakeTwilio, dict[str, str]]) -> None:
    fake, sids = history

    found = _client(fake).messages.list(to=PATIENT, page_size=2)

    assert _sids(found, sids) == ["d", "c", "a"]
    pages = [r for r in fake.requests if r.method == "GET"]
    assert [r.query.get("Page") for r in pages] == [None, "1"]
    assert fake.problems == []


def test_list_body_has_the_spec_shape(history: tuple[FakeTwilio, dict[str, str]]) -> None:
    fake, _ = history
    response = requests.get(
        fake.url + fake.messages_path,
        params={"To": PATIENT, "DateSent>": "2025-03-01", "PageSize": "2"},
        auth=(fake.account_sid, fake.auth_token),
        timeout=2,
    )
    body = response.json()
    assert response.status_code == 200
    assert set(body) == set(contract().list_keys)
    assert (body["start"], body["end"], body["page"], body["page_size"]) == (0, 1, 0, 2)
    assert body["previous_page_uri"] is None
    assert body["next_page_uri"].startswith(fake.messages_path + "?")
    assert "Page=1" in body["next_page_uri"]
    assert [set(m) for m in body["messages"]] == [set(contract().message_keys)] * 2
    assert [_shape_problems(m) for m in body["messages"]] == [[], []]


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"Status": "delivered"}, "'Status' is not defined"),
        ({"DateSent>": "yesterday"}, "not a date"),
        ({"PageSize": "5000"}, "above the maximum"),
    ],
)
def test_invalid_list_is_rejected(fake: FakeTwilio, params: dict[str, str], complaint: str) -> None:
    response = requests.get(
        fake.url + fake.messages_path, params=params, auth=(fake.account_sid, fake.auth_token), timeout=2
    )
    assert response.status_code == 400
    assert any(complaint in problem for problem in fake.problems), fake.problems


def test_list_errors_are_plain_twilio_exceptions(fake: FakeTwilio) -> None:
    # Unlike create, a failed list page raises the TwilioException base class with the response attached.
    with pytest.raises(TwilioException) as raised:
        _client(fake, password="wrong").messages.list(
            to=PATIENT, date_sent_after=datetime.now(UTC) - timedelta(1)
        )
    assert type(raised.value) is TwilioException
    message, response = raised.value.args
    assert message == "Unable to fetch page"
    assert response.status_code == 401
    assert '"code": 20003' in response.text


# -------------------------------------------------------------------------------------- faults


ERROR_FAULTS = [(SERVER_ERROR, 500, 20500), (RATE_LIMITED, 429, 20429)]


def _raw_fault(fake: FakeTwilio, kind: str) -> requests.Response:
    fake.inject(Faults(rate=1.0, kinds=(kind,)))
    return _post(fake, {"To": PATIENT, "From": CLINIC, "Body": "hi"})


@pytest.mark.parametrize(("kind", "status", "code"), ERROR_FAULTS)
def test_error_faults_answer_twilio_errors_and_store_nothing(
    fake: FakeTwilio, kind: str, status: int, code: int
) -> None:
    fake.inject(Faults(rate=1.0, kinds=(kind,)))

    with pytest.raises(TwilioRestException) as raised:
        _send(_client(fake))

    assert (raised.value.status, raised.value.code) == (status, code)
    assert fake.created == []
    assert [(r.fault, r.status) for r in fake.requests] == [(kind, status)]
    assert fake.fault_counts == {kind: 1}
    assert fake.problems == []


@pytest.mark.parametrize(("kind", "status", "code"), ERROR_FAULTS)
def test_error_faults_have_twilio_error_bodies(fake: FakeTwilio, kind: str, status: int, code: int) -> None:
    response = _raw_fault(fake, kind)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body == {
        "code": code,
        "message": body["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert body["message"]


def test_slow_reply_fault_stores_first_and_answers_after_the_client_gave_up(fake: FakeTwilio) -> None:
    fake.inject(Faults(rate=1.0, kinds=(SLOW_REPLY,), slow_seconds=1.0))
    client = _client(fake, timeout=0.3)

    with pytest.raises(requests.exceptions.ReadTimeout):
        _send(client, body="Slow but accepted.")

    # Twilio has it already: a sender that asks the list API finds it and must not send again.
    [stored] = fake.created
    [listed] = client.messages.list(to=PATIENT, date_sent_after=datetime.now(UTC) - timedelta(minutes=2))
    assert (listed.sid, listed.body) == (stored["sid"], "Slow but accepted.")
    assert fake.wait_until(lambda: fake.requests[0].status == 201, timeout=3)  # the late answer
    assert fake.requests[0].fault == SLOW_REPLY
    assert fake.problems == []


@pytest.mark.parametrize(("kind", "stored"), [(DROP_BEFORE_STORE, 0), (DROP_AFTER_STORE, 1)])
def test_drop_faults_close_the_connection_without_an_answer(fake: FakeTwilio, kind: str, stored: int) -> None:
    fake.inject(Faults(rate=1.0, kinds=(kind,)))
    client = _client(fake)

    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        _send(client, body="Dropped.")

    assert not isinstance(raised.value, TwilioException)
    assert "Remote end closed connection without response" in str(raised.value)
    assert [(r.fault, r.status) for r in fake.requests] == [(kind, None)]  # never answered
    assert len(fake.created) == stored
    fake.inject(None)
    listed = client.messages.list(to=PATIENT)
    assert [m.sid for m in listed] == [m["sid"] for m in fake.created]
    assert fake.problems == []


def _fault_sequence(faults: Faults, creates: int) -> list[str | None]:
    """The fault each of ``creates`` sequential sends got, seen from the client and from the fake."""
    with FakeTwilio() as server:
        server.inject(faults)
        client = _client(server)
        seen: list[str | None] = []
        for number in range(creates):
            try:
                _send(client, body=f"Message {number}")
                seen.append(None)
            except TwilioRestException as exc:
                seen.append({500: SERVER_ERROR, 429: RATE_LIMITED}[exc.status])
            except requests.exceptions.ConnectionError:
                seen.append("dropped")
        drops = (DROP_BEFORE_STORE, DROP_AFTER_STORE)
        assert ["dropped" if r.fault in drops else r.fault for r in server.requests] == seen
        assert sum(server.fault_counts.values()) == sum(s is not None for s in seen)
        # Every create that was not refused is stored, once: the dropped-after-store ones too.
        assert len(server.created) == seen.count(None) + server.fault_counts[DROP_AFTER_STORE]
        assert server.problems == []
        return [r.fault for r in server.requests]


def test_faults_hit_about_the_given_fraction_and_replay_with_the_seed() -> None:
    quick = (SERVER_ERROR, RATE_LIMITED, DROP_BEFORE_STORE, DROP_AFTER_STORE)
    first = _fault_sequence(Faults(rate=0.2, seed=11, kinds=quick), 150)
    again = _fault_sequence(Faults(rate=0.2, seed=11, kinds=quick), 150)
    other = _fault_sequence(Faults(rate=0.2, seed=12, kinds=quick), 150)

    assert first == again
    assert first != other
    faulted = [kind for kind in first if kind is not None]
    assert 15 <= len(faulted) <= 45  # 20% of 150 is 30; the seed fixes the draw, so this never flakes
    assert set(faulted) == set(quick)


def test_scripted_outcomes_come_before_faults(fake: FakeTwilio) -> None:
    fake.inject(Faults(rate=1.0, kinds=(RATE_LIMITED,)))
    fake.script(server_error())
    client = _client(fake)
    statuses = []
    for _ in range(2):
        with pytest.raises(TwilioRestException) as raised:
            _send(client)
        statuses.append(raised.value.status)
    fake.inject(None)
    _send(client)

    assert statuses == [500, 429]
    assert [r.fault for r in fake.requests] == [None, RATE_LIMITED, None]
    assert len(fake.created) == 1


def test_sent_counts_show_what_reached_the_fake_twice(fake: FakeTwilio) -> None:
    client = _client(fake)
    sids = {_send(client, body="Once.").sid, _send(client, body="Twice.").sid}
    sids.add(_send(client, body="Twice.").sid)
    sids.add(_send(client, to=OTHER_PATIENT, body="Twice.").sid)

    assert fake.sent_counts() == {(PATIENT, "Once."): 1, (PATIENT, "Twice."): 2, (OTHER_PATIENT, "Twice."): 1}
    assert fake.duplicates() == {(PATIENT, "Twice."): 2}
    assert fake.issued_sids() == sids
    assert len(sids) == 4


@pytest.mark.parametrize("bad", [{"rate": 1.5}, {"rate": -0.1}, {"kinds": ("teapot",)}, {"kinds": ()}])
def test_faults_refuse_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults(**bad)
