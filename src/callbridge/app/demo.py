"""What only the built-in demo line needs, and the tone line's application.

The demo line (``ivr/flows/demo.yaml``, what ``callbridge serve`` answers
without a config) hands off to the agent ``assistant``, which looks orders up
in a demo SQLite database and transfers to an operator at a local test
address. None of that belongs in a production install: it exists only while
the demo flow can answer calls (routing reaches it; with no routing configured
it is the default flow). A config without it gets no orders database, no
``lookup_order`` unless an agent lists it, and no operator URI unless
``demo.operator_uri`` sets one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..agent.demo_orders import OrdersDb
from ..agent.desk import DEFAULT_TOOLS, DEMO_TOOLS, AgentDefinition
from ..call import events as ev
from ..call.call import Call
from ..media.tone import ToneSource
from .config import Config
from .routing import Router

DEMO_FLOW = "demo"
DEMO_AGENT = "assistant"  # the agent the demo flow hands off to
DEMO_AGENT_TOOLS = (*DEMO_TOOLS, *DEFAULT_TOOLS)
DEMO_OPERATOR_URI = "sip:operator@127.0.0.1:5099"  # the demo's operator: a local test address
DEMO_ORDERS_FILE = "demo_orders.sqlite"  # in the data dir

# A 440 Hz tone: easy to hear, easy to check in a recording (frequency and energy).
DEMO_TONE_HZ = 440.0


def demo_line_reachable(config: Config) -> bool:
    """Whether some call can reach the demo flow."""
    return DEMO_FLOW in Router(config).reachable_flows


def operator_uri(config: Config) -> str | None:
    """Where "the operator" is: the configured URI, the demo's while the demo line answers, else nowhere."""
    if config.demo.operator_uri:
        return config.demo.operator_uri
    return DEMO_OPERATOR_URI if demo_line_reachable(config) else None


def default_tools(config: Config, agent_name: str) -> tuple[str, ...]:
    """The tools of an agent whose config lists none: the demo's agent keeps the demo's lookup."""
    if agent_name == DEMO_AGENT and demo_line_reachable(config):
        return DEMO_AGENT_TOOLS
    return DEFAULT_TOOLS


def orders_db_for(definitions: dict[str, AgentDefinition], data_dir: Path) -> OrdersDb | None:
    """The demo orders database, only when some agent can use it."""
    if any(name in definition.tools for definition in definitions.values() for name in DEMO_TOOLS):
        return OrdersDb(data_dir / DEMO_ORDERS_FILE)
    return None


class DemoToneApp:
    async def run(self, call: Call, manager: object) -> None:
        stream = call.leg.stream
        if stream is None:
            return
        call.publish(ev.Played(source=f"tone {DEMO_TONE_HZ:.0f} Hz"))
        stream.play(ToneSource((DEMO_TONE_HZ,), sample_rate=stream.codec.sample_rate))
        await asyncio.Event().wait()  # play until the call ends (the manager cancels us)
