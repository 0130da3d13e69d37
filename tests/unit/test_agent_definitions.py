"""Agent settings from the config file become the desk's agent definitions; the demo's extras only for the demo.

The demo line (the built-in flow, what ``callbridge serve`` answers without a
config) keeps its orders database, its ``lookup_order`` agent and its local
operator. A config whose routing never reaches the demo gets none of them.
"""

from __future__ import annotations

import logging

from callbridge.agent.call_tools import call_control_tools
from callbridge.agent.demo_orders import lookup_order
from callbridge.agent.desk import BUILTIN_TOOLS, DEFAULT_TOOLS, AgentDesk
from callbridge.app.agents import agent_definitions, agent_desk
from callbridge.app.config import Config, load_config
from callbridge.app.demo import DEMO_OPERATOR_URI, DEMO_ORDERS_FILE, demo_line_reachable, operator_uri
from callbridge.app.phoneline import load_flows
from tests.support.agent_call import CallSide, PacedStream

PRODUCTION = """\
flows:
  main: main.yaml
routing:
  default_flow: main
agents:
  - name: assistant
    provider: local
"""

MAIN_FLOW = """\
flow: main
start: hello
nodes:
  hello: {type: say, text: "Hello.", next: to_operator}
  to_operator: {type: transfer, target: "{{ operator_uri }}", method: refer}
"""


def production(tmp_path, extra: str = "") -> Config:
    (tmp_path / "main.yaml").write_text(MAIN_FLOW)
    path = tmp_path / "c.yaml"
    path.write_text(PRODUCTION + extra)
    return load_config(path)


def offered(desk: AgentDesk, name: str) -> list[str]:
    """The tools the desk would register for agent ``name`` on a call."""
    call = CallSide(PacedStream())
    tools = call_control_tools(call, lambda: None, desk.operator_uri)
    if desk.orders_db is not None:
        tools.insert(0, lookup_order)
    return [t.__tool_spec__.name for t in tools if t.__tool_spec__.name in desk.agents[name].tools]


def test_every_builtin_tool_name_is_a_real_tool():
    tools = [lookup_order, *call_control_tools(call=None, last_played=lambda: None, operator_uri="sip:op@x")]
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
    assert cloud.tools == DEFAULT_TOOLS and cloud.fallback == "holding"
    assert cloud.options == {"voice": "marin", "audio_format": "g711_ulaw"}


def test_the_demo_line_keeps_its_database_lookup_and_operator(tmp_path):
    config = Config()  # `callbridge serve` without --config: the demo line
    assert demo_line_reachable(config) and operator_uri(config) == DEMO_OPERATOR_URI
    desk = agent_desk(config, data_dir=tmp_path, transcriber=lambda: None)
    assert desk.operator_uri == "sip:operator@127.0.0.1:5099"
    assert desk.orders_db is not None and (tmp_path / DEMO_ORDERS_FILE).is_file()
    assert offered(desk, "assistant") == ["lookup_order", "transfer_to_human", "end_call", "send_dtmf"]
    assert load_flows(config)["demo"].settings["operator_uri"] == DEMO_OPERATOR_URI


def test_a_production_config_gets_no_demo_database_tool_or_operator(tmp_path, caplog):
    config = production(tmp_path)
    assert not demo_line_reachable(config) and operator_uri(config) is None
    with caplog.at_level(logging.WARNING, "callbridge.agent"):
        desk = agent_desk(config, data_dir=tmp_path, transcriber=lambda: None)
    assert desk.orders_db is None and not (tmp_path / DEMO_ORDERS_FILE).exists()
    assert desk.operator_uri is None
    # what its config lists (nothing: the call-control defaults), less the transfer it has no target for
    assert desk.agents["assistant"].tools == DEFAULT_TOOLS
    assert offered(desk, "assistant") == ["end_call", "send_dtmf"]
    assert "transfer_to_human" in caplog.text and "not offered" in caplog.text
    # a flow's transfer to {{ operator_uri }} renders empty: the runner treats it as a failed transfer
    assert load_flows(config)["main"].settings["operator_uri"] == ""


def test_a_production_config_gets_what_it_configures(tmp_path):
    config = production(tmp_path, """\
  - name: orders
    tools: [lookup_order, end_call]
demo:
  operator_uri: sip:desk@pbx.example.com
""")
    desk = agent_desk(config, data_dir=tmp_path, transcriber=lambda: None)
    assert desk.operator_uri == "sip:desk@pbx.example.com"
    assert offered(desk, "assistant") == ["transfer_to_human", "end_call", "send_dtmf"]
    assert offered(desk, "orders") == ["lookup_order", "end_call"]  # it asked for the demo's tool: it gets it
    assert desk.orders_db is not None
    assert load_flows(config)["main"].settings["operator_uri"] == "sip:desk@pbx.example.com"


def test_a_config_that_still_routes_to_the_demo_keeps_the_demo(tmp_path):
    (tmp_path / "main.yaml").write_text(MAIN_FLOW)
    path = tmp_path / "c.yaml"
    path.write_text('flows: {main: main.yaml}\nrouting:\n  numbers: {"100": main}\n')  # default_flow: demo
    config = load_config(path)
    assert demo_line_reachable(config)
    desk = agent_desk(config, data_dir=tmp_path, transcriber=lambda: None)
    assert desk.operator_uri == DEMO_OPERATOR_URI and desk.orders_db is not None
