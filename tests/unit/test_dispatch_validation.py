"""POST /api/dispatch bodies: what is accepted, and the field each rejection names."""

from __future__ import annotations

import pytest

from callbridge.app.config import Config
from callbridge.app.dispatch import DispatchError, dial_string_seconds, parse_dispatch

CONFIG = Config.model_validate({
    "outbound_trunks": [{"name": "carrier", "host": "sip.example.com", "port": 5080, "transport": "tcp",
                         "numbers": ["+15550001111", "+15550002222"], "headers": {"X-Account": "acme"}}],
    "agents": [{"name": "assistant"}, {"name": "collector", "dispatch": "explicit"}],
})


def body(**metadata) -> dict:
    base = {"sip_call_to": "+15550102030", "sip_trunk_id": "carrier", "participant_identity": "p1"}
    return {"agent_name": "collector", "room_name": "r1", "metadata": {**base, **metadata}}


def test_a_full_request_is_parsed():
    request = parse_dispatch(body(dtmf="12w#", ringing_timeout=20, max_call_duration=600.5, wait_until_answered=True,
                                  headers={"X-Campaign": "spring"}, order="A-7", language="es"), CONFIG)
    assert request.agent_name == "collector" and request.trunk.name == "carrier"
    assert request.target_uri() == "sip:+15550102030@sip.example.com:5080"
    assert str(request.destination()) == "tcp:sip.example.com:5080"
    assert request.caller_id == "+15550001111"  # the trunk's first number
    assert request.sip_headers() == [("X-Account", "acme"), ("X-Campaign", "spring")]
    assert request.ringing_timeout == 20 and request.max_call_duration == 600.5 and request.wait_until_answered
    assert request.context == {"order": "A-7"} and request.language == "es"


def test_livekit_style_metadata_string_and_sip_uri_target():
    import json

    raw = body(sip_call_to="sip:bob@pbx.example.com", sip_number="+15550002222")
    raw["metadata"] = json.dumps(raw["metadata"])
    request = parse_dispatch(raw, CONFIG)
    assert request.target_uri() == "sip:bob@pbx.example.com" and request.caller_id == "+15550002222"


@pytest.mark.parametrize("raw, field, reason", [
    ([], "body", "must be a JSON object"),
    ({"metadata": {}}, "agent_name", "required"),
    (dict(body(), agent_name="ghost"), "agent_name", "unknown agent 'ghost'"),
    (dict(body(), agent_name=7), "agent_name", "must be a non-empty string"),
    (dict(body(), metadata="{not json"), "metadata", "is a string but not JSON"),
    (dict(body(), metadata=None), "metadata", "required"),
    (body(sip_trunk_id="x"), "metadata.sip_trunk_id", "unknown trunk 'x'"),
    (body(sip_call_to="0044 20 7946"), "metadata.sip_call_to", "E.164"),
    (body(sip_call_to="+0123"), "metadata.sip_call_to", "E.164"),
    (body(sip_call_to="sip:a b@c"), "metadata.sip_call_to", "not a valid SIP URI"),
    (body(participant_identity=""), "metadata.participant_identity", "non-empty"),
    (body(sip_number="+19999999999"), "metadata.sip_number", "not one of"),
    (body(dtmf="12x"), "metadata.dtmf", "digits"),
    (body(dtmf=12), "metadata.dtmf", "must be a string"),
    (body(ringing_timeout=True), "metadata.ringing_timeout", "number of seconds"),
    (body(ringing_timeout=0), "metadata.ringing_timeout", "more than 0"),
    (body(ringing_timeout=301), "metadata.ringing_timeout", "at most 300"),
    (body(max_call_duration="1h"), "metadata.max_call_duration", "number of seconds"),
    (body(wait_until_answered=1), "metadata.wait_until_answered", "true or false"),
    (body(headers=["X-A"]), "metadata.headers", "object"),
    (body(headers={"Contact": "x"}), "metadata.headers.Contact", "X- headers"),
    (body(headers={"X-A": "a\r\nVia: evil"}), "metadata.headers.X-A", "single-line"),
    (body(headers={"X-A": 5}), "metadata.headers.X-A", "single-line"),
])
def test_bad_requests_name_the_field(raw, field, reason):
    with pytest.raises(DispatchError) as error:
        parse_dispatch(raw, CONFIG)
    assert error.value.field == field
    assert reason in error.value.reason
    assert error.value.to_json()["field"] == field


def test_dial_string_duration_counts_pauses():
    assert dial_string_seconds("") == 0
    assert dial_string_seconds("1w2") - dial_string_seconds("12") == pytest.approx(0.5)
