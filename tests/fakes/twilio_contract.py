"""The Messages contract the fake Twilio enforces, as plain data, so the tests need no spec checkout."""

# Copied from Twilio's OpenAPI spec twilio_api_v2010.json (twilio/twilio-oai at d50069b; CI has it in
# ../shared/twilio-oai/): the Messages resource /2010-04-01/Accounts/{AccountSid}/Messages.json and the
# schema api.v2010.account.message, $refs resolved, each schema cut down to the keywords the fake uses
# (CONTRACT_KEYWORDS in twilio.py). test_table_matches_the_spec in test_fake_twilio.py checks it against
# the spec wherever ../shared/twilio-oai exists, so a change on either side fails there.

from __future__ import annotations

from typing import Any

# POST requestBody (application/x-www-form-urlencoded, CreateMessageRequest): form field -> schema.
CREATE_FIELDS: dict[str, dict[str, Any]] = {
    "To": {"type": "string", "format": "phone-number"},
    "StatusCallback": {"type": "string", "format": "uri"},
    "ApplicationSid": {"type": "string", "pattern": "^AP[0-9a-fA-F]{32}$", "minLength": 34, "maxLength": 34},
    "MaxPrice": {"type": "number"},
    "ProvideFeedback": {"type": "boolean"},
    "Attempt": {"type": "integer"},
    "ValidityPeriod": {"type": "integer"},
    "ForceDelivery": {"type": "boolean"},
    "ContentRetention": {"type": "string", "enum": ["retain", "discard"]},
    "AddressRetention": {"type": "string", "enum": ["retain", "obfuscate"]},
    "SmartEncoded": {"type": "boolean"},
    "PersistentAction": {"type": "array", "items": {"type": "string"}},
    "TrafficType": {"type": "string", "enum": ["free"]},
    "ShortenUrls": {"type": "boolean"},
    "ScheduleType": {"type": "string", "enum": ["fixed"]},
    "SendAt": {"type": "string", "format": "date-time"},
    "SendAsMms": {"type": "boolean"},
    "ContentVariables": {"type": "string"},
    "RiskCheck": {"type": "string", "enum": ["enable", "disable"]},
    "From": {"type": "string", "format": "phone-number"},
    "FallbackFrom": {"type": "string", "format": "phone-number"},
    "MessagingServiceSid": {
        "type": "string",
        "pattern": "^MG[0-9a-fA-F]{32}$",
        "minLength": 34,
        "maxLength": 34,
    },
    "Body": {"type": "string"},
    "MediaUrl": {
        "type": "array",
        "items": {"type": "string", "format": "uri", "x-twilio": {"ignoreFormat": True}},
    },
    "ContentSid": {"type": "string", "pattern": "^HX[0-9a-fA-F]{32}$", "minLength": 34, "maxLength": 34},
}

# The requestBody schema's "required" list.
CREATE_REQUIRED: tuple[str, ...] = ("To",)

# GET parameters with "in": "query": name -> schema.
LIST_PARAMS: dict[str, dict[str, Any]] = {
    "To": {"type": "string", "format": "phone-number"},
    "From": {"type": "string", "format": "phone-number"},
    "DateSent": {"type": "string", "format": "date-time"},
    "DateSent<": {"type": "string", "format": "date-time"},
    "DateSent>": {"type": "string", "format": "date-time"},
    "PageSize": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 1000},
    "Page": {"type": "integer", "minimum": 0},
    "PageToken": {"type": "string"},
}

# components.schemas["api.v2010.account.message"].properties: the keys of every message the fake returns.
MESSAGE_PROPERTIES: dict[str, dict[str, Any]] = {
    "body": {"type": "string", "nullable": True},
    "num_segments": {"type": "string", "nullable": True},
    "direction": {"type": "string", "enum": ["inbound", "outbound-api", "outbound-call", "outbound-reply"]},
    "from": {"type": "string", "format": "phone-number", "nullable": True},
    "to": {"type": "string", "nullable": True},
    "date_updated": {"type": "string", "format": "date-time-rfc-2822", "nullable": True},
    "price": {"type": "string", "nullable": True},
    "error_message": {"type": "string", "nullable": True},
    "uri": {"type": "string", "nullable": True},
    "account_sid": {
        "type": "string",
        "nullable": True,
        "pattern": "^AC[0-9a-fA-F]{32}$",
        "minLength": 34,
        "maxLength": 34,
    },
    "num_media": {"type": "string", "nullable": True},
    "status": {
        "type": "string",
        "enum": [
            "queued",
            "sending",
            "sent",
            "failed",
            "delivered",
            "undelivered",
            "receiving",
            "received",
            "accepted",
            "scheduled",
            "read",
            "partially_delivered",
            "canceled",
        ],
    },
    "messaging_service_sid": {
        "type": "string",
        "nullable": True,
        "pattern": "^MG[0-9a-fA-F]{32}$",
        "minLength": 34,
        "maxLength": 34,
    },
    "sid": {
        "type": "string",
        "nullable": True,
        "pattern": "^(SM|MM)[0-9a-fA-F]{32}$",
        "minLength": 34,
        "maxLength": 34,
    },
    "date_sent": {"type": "string", "format": "date-time-rfc-2822", "nullable": True},
    "date_created": {"type": "string", "format": "date-time-rfc-2822", "nullable": True},
    "error_code": {"type": "integer", "nullable": True},
    "price_unit": {"type": "string", "format": "currency", "nullable": True},
    "api_version": {"type": "string", "nullable": True},
    "subresource_uris": {"type": "object", "format": "uri-map", "nullable": True},
}

# The GET 200 response (ListMessageResponse): the keys of a list page, in the spec's order.
LIST_KEYS: tuple[str, ...] = (
    "end",
    "first_page_uri",
    "next_page_uri",
    "page",
    "page_size",
    "previous_page_uri",
    "start",
    "uri",
    "messages",
)
