"""A cloud-provider agent on a real call: when the provider is down for good, the caller hears
an apology and is transferred to a person, never dropped."""

from __future__ import annotations

import pytest

from .conftest import free_port
from .test_ivr import OPERATOR, run_caller
from .test_media import wait_status

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("provider", ["openai_realtime", "nova_sonic"])
def test_a_provider_down_for_good_ends_in_an_apology_and_a_transfer(server_factory, tmp_path, provider):
    dead = free_port()  # nothing listens there: every connection is refused
    settings = (f"{{url: 'ws://127.0.0.1:{dead}/v1/realtime', api_key: sk-test}}" if provider == "openai_realtime"
                else f"{{endpoint_uri: 'https://127.0.0.1:{dead}', region: us-east-1, "
                     "aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: not-a-real-secret, max_attempts: 1}")
    server = server_factory(f"""\
agents:
  - name: assistant
    provider: {provider}
    {provider}: {settings}
    fallback: transfer
demo:
  operator_uri: {OPERATOR}
""", ivr=True)
    # X-Lang and X-Reason send the caller straight from the IVR to the agent.
    sipp, result = run_caller(server, tmp_path, [], end="refer", refer_to=OPERATOR,
                              headers={"X-Lang": "en", "X-Reason": "billing"}, timeout_ms=40000)
    assert result.returncode == 0, result.output  # the REFER to the operator arrived
    call = wait_status(server, sipp, "hangup")
    assert call["handoff"]["reason"] == "billing"
    roles = [e["role"] for e in call["transcript"]]
    assert "fallback" in roles, call["transcript"]
    error = next(e for e in call["transcript"] if e["role"] == "error")
    assert error["code"] == "unavailable", error
    fallback = [e for e in call["ivr"] if e["type"] == "agent_fallback"]
    assert fallback and fallback[0]["action"] == "transfer", call["ivr"]
    kinds = [e["type"] for e in call["ivr"]]
    apology = [e for e in call["ivr"] if e["type"] == "agent_notice" and e["text"].startswith("I'm sorry")]
    assert apology, call["ivr"]
    assert kinds.index("agent_notice") < kinds.index("agent_fallback"), kinds  # heard before the REFER
    assert call["end_reason"] == "transfer"
