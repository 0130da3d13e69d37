"""The application every answered call runs: its routed flow, or the test tone line."""

from __future__ import annotations

import logging

from ..agent.holding import holding_agent
from ..call.call import Call, CallStatus
from ..call.manager import CallManager
from ..ivr.callio import AgentStarter, CallFlowIO, CallHungUp, Dialer, TranscriberFactory
from ..ivr import DEMO_FLOW_PATH, Flow, FlowRunner, load_flow
from ..ivr.nodes import AgentNode, GatherNode
from ..speech.prompts import PromptCache, PromptSpec
from .config import Config
from .demo import DEMO_FLOW, DemoToneApp, operator_uri
from .routing import RouteKind, parse_route

log = logging.getLogger("callbridge.ivr")


def load_flows(config: Config) -> dict[str, Flow]:
    """Every flow the config names, plus the built-in demo; a broken file raises SourceError."""
    settings = {"operator_uri": operator_uri(config)}  # None renders empty: a transfer there fails cleanly
    files = {DEMO_FLOW: DEMO_FLOW_PATH, **{name: config.base_dir / path
                                   for name, path in config.flows.items()}}
    flows = {}
    for name, path in files.items():
        flow = load_flow(path, agents=config.agent_names, trunks=config.outbound_trunk_names, settings=settings)
        for warning in flow.warnings:
            log.warning("flow %s: %s", name, warning)
        flows[name] = flow
    return flows


def hands_off(flow: Flow) -> bool:
    return any(isinstance(node, AgentNode) for node in flow.nodes.values())


def listens_for_speech(flow: Flow) -> bool:
    return any(isinstance(node, GatherNode) and node.input in ("speech", "both") for node in flow.nodes.values())


def static_prompts(flows: dict[str, Flow]) -> list[PromptSpec]:
    # dict, not set: keep the flows' order so start-up progress reads naturally
    return list(dict.fromkeys(prompt for flow in flows.values() for prompt in flow.static_prompts()))


class PhoneLineApp:
    def __init__(self, flows: dict[str, Flow], prompts: PromptCache, *, transcriber: TranscriberFactory | None,
                 dialer: Dialer | None = None, start_agent: AgentStarter = holding_agent) -> None:
        self.flows = flows
        self.prompts = prompts
        self.transcriber = transcriber
        self.dialer = dialer
        self.start_agent = start_agent
        self.tone = DemoToneApp()

    async def run(self, call: Call, manager: CallManager) -> None:
        route = parse_route(call.route, call.direction)
        if route.kind in (RouteKind.LEG, RouteKind.AGENT):
            return  # a leg we dialled (a bridged transfer) or a dispatch: whoever started it drives it
        if route.kind is RouteKind.TONE:
            await self.tone.run(call, manager)
            return
        name = route.name or DEMO_FLOW
        io = CallFlowIO(call, manager, prompts=self.prompts, start_agent=self.start_agent,
                        transcriber=self.transcriber, dial=self.dialer)
        try:
            await FlowRunner(self.flows[name], io).run()
        except CallHungUp:
            pass
        except Exception:  # noqa: BLE001 - a flow bug must end the call cleanly, not leave dead air
            log.exception("flow %s failed on call %s", name, call.id)
            if call.status is not CallStatus.HANGUP:
                manager.hangup(call, "error")
        finally:
            io.close()
        if call.status is not CallStatus.HANGUP:
            manager.hangup(call, "flow_ended")
