"""HandoffContext: what the voice agent learns about a caller from the IVR."""

from __future__ import annotations

import json

from callbridge.ivr.handoff import HandoffContext, x_headers


def make_context(**overrides) -> HandoffContext:
    fields = dict(
        agent="assistant",
        caller_number="+34911222333",
        caller_name="Lucía Pérez",
        called_number="+18005550100",
        language="es",
        reason="billing",
        path=[{"menu": "language_menu", "digit": "2", "label": "Español"},
              {"menu": "main_menu", "digit": "2", "label": "Billing"}],
        variables={"crm.tier": "gold"},
        sip_headers={"X-Lang": "es", "x-reason": "billing", "X-Twilio-CallSid": "CA42"},
        context={"account": "A-17"},
    )
    fields.update(overrides)
    return HandoffContext(**fields)


def test_to_dict_is_json_and_complete():
    data = make_context().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["reason"] == "billing" and data["language"] == "es"
    assert data["path"][1] == {"menu": "main_menu", "digit": "2", "label": "Billing"}
    assert data["context"] == {"account": "A-17"}
    assert data["sip_headers"]["X-Twilio-CallSid"] == "CA42"


def test_header_accessors_ignore_case():
    context = make_context()
    assert context.x_lang == "es"
    assert context.x_reason == "billing"
    assert context.twilio_call_sid == "CA42"
    assert make_context(sip_headers={}).twilio_call_sid is None


def test_instructions_say_who_what_and_why():
    text = make_context().to_instructions()
    assert "Lucía Pérez (+34911222333)" in text
    assert "Spanish (es)" in text
    assert "Reason for the call: billing." in text
    assert "language_menu: Español; main_menu: Billing" in text
    assert "account = A-17" in text and "crm.tier = gold" in text


def test_instructions_for_an_anonymous_caller_without_menus():
    text = make_context(caller_number=None, caller_name=None, path=[], variables={}, context={},
                        reason="order_status", language="en").to_instructions()
    assert "an unknown number" in text
    assert "order status" in text
    assert "menu they chose" not in text and "Known details" not in text


def test_x_headers_keeps_only_x_headers_as_received():
    headers = {"X-Lang": "en", "User-Agent": "phone", "x-custom": "1", "Via": "SIP/2.0/UDP h"}
    assert x_headers(headers) == {"X-Lang": "en", "x-custom": "1"}
