"""Agent settings from the config file become the desk's agent definitions."""

from __future__ import annotations

from callbridge.agent.call_tools import call_control_tools
from callbridge.agent.demo_orders import lookup_order
from callbridge.agent.desk import BUILTIN_TOOLS
from callbridge.app.agents import agent_definitions
from callbridge.app.config import load_config


def test_every_builtin_tool_name_is_a_real_tool():
    tools = [lookup_order, *call_control_tools(io=None, last_played=lambda: None, operator_uri="sip:op@x")]
    assert sorted(t.__tool_spec__.name for t in tools) == sorted(BUILTIN_TOOLS)


def test_config_settings_reach_the_definitions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("""\
agents:
  - name: orders
    tools: [lookup_order]
    voice: joe
    language: es
    llm: {base_url: "http://127.0.0.1:9/v1", model: m}
  - name: cloud
    provider: openai_realtime
    openai_realtime: {voice: marin, audio_format: g711_ulaw}
    fallback: holding
""")
    definitions = agent_definitions(load_config(path))
    orders, cloud = definitions["orders"], definitions["cloud"]
    assert orders.tools == ("lookup_order",) and orders.voice == "joe" and orders.language == "es"
    assert orders.llm == {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": None}
    assert cloud.tools == BUILTIN_TOOLS and cloud.fallback == "holding"
    assert cloud.options == {"voice": "marin", "audio_format": "g711_ulaw"}
