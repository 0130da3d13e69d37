"""Running a flow for one call against a :class:`FlowIO`.

Each node type has one handler returning the id of the next node, or
``None`` when the flow is over. Everything the caller hears or does is
recorded through ``io.record`` so the call record shows the IVR path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from .collect import collect, match_choice
from .model import Flow
from .handoff import HandoffContext, x_headers
from .io import FlowIO
from .nodes import (AgentNode, BranchNode, GatherNode, GotoNode, HangupNode, HttpNode, MenuNode,
                    PlayNode, SayNode, SetNode, Text, TransferNode)
from .template import render
from .variables import flow_variables, initial_variables
from .webhook import WebhookError, call_webhook

log = logging.getLogger(__name__)

MAX_NODE_VISITS = 1000  # a flow that loops forever must not hold the line forever


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class FlowRunner:
    def __init__(self, flow: Flow, io: FlowIO, *, clock: Callable[[], datetime] = _utc_now,
                 http_client: httpx.AsyncClient | None = None, max_visits: int = MAX_NODE_VISITS) -> None:
        self.flow = flow
        self.io = io
        self.clock = clock
        self.http_client = http_client
        self.max_visits = max_visits
        self.variables: dict[str, str] = initial_variables(flow, io.info)
        self.path: list[dict[str, str]] = []  # menu choices: {"menu", "digit", "label"}
        self.visits = 0
        self.outcome: str | None = None  # hangup | transfer | handoff | loop_limit
        # Each handler takes its own node type; the dict key guarantees the match.
        self._handlers: dict[type, Callable[[Any], Awaitable[str | None]]] = {
            SayNode: self._say, PlayNode: self._play, GatherNode: self._gather, MenuNode: self._menu,
            SetNode: self._set, BranchNode: self._branch, HttpNode: self._http, TransferNode: self._transfer,
            AgentNode: self._agent, HangupNode: self._hangup, GotoNode: self._goto,
        }

    async def run(self) -> str:
        """Run until the flow ends; returns :attr:`outcome`."""
        node_id: str | None = self.flow.start
        while node_id is not None:
            self.visits += 1
            if self.visits > self.max_visits:
                log.error("flow %s: more than %d node visits, last %r; hanging up",
                          self.flow.name, self.max_visits, node_id)
                self.io.record("error", reason="node visit limit reached", node=node_id)
                await self._end("loop_limit", "flow_loop")
                return "loop_limit"
            node = self.flow.nodes[node_id]
            self.io.record("node", node=node_id, type=type(node).__name__.removesuffix("Node").lower())
            node_id = await self._handlers[type(node)](node)
        if self.outcome is None:
            await self._end("hangup", "end_of_flow")
        return self.outcome or "hangup"

    async def _end(self, outcome: str, hangup_reason: str | None) -> None:
        self.outcome = outcome
        if hangup_reason is not None:
            self.io.record("hangup", reason=hangup_reason)
            await self.io.hangup(hangup_reason)

    # -- speaking -----------------------------------------------------------

    async def _speak(self, node_id: str, text: Text, *, language: str | None = None,
                     voice: str | None = None) -> None:
        spoken_in, words = text.pick(language or self.variables.get("language", ""), self.flow.language)
        rendered = render(words, self.variables).strip()
        if not rendered:
            return
        self.io.record("prompt", node=node_id, text=rendered, language=spoken_in)
        await self.io.say(rendered, language=spoken_in, voice=self.flow.voice_for(spoken_in, voice))

    async def _say(self, node: SayNode) -> str | None:
        await self._speak(node.id, node.text, language=node.language, voice=node.voice)
        return node.next

    async def _play(self, node: PlayNode) -> str | None:
        self.io.record("prompt", node=node.id, file=str(node.file))
        await self.io.play(node.file)
        return node.next

    # -- input --------------------------------------------------------------

    async def _menu(self, node: MenuNode) -> str | None:
        failures = 0
        say_prompt = node.prompt_on_entry
        while True:
            key = await self.io.read_digit(0)  # a key typed ahead during an earlier prompt
            if key is None and say_prompt:
                await self._speak(node.id, node.prompt, voice=node.voice)
            if key is None:
                key = await self.io.read_digit(node.timeout)
            say_prompt = True
            if key is None:
                failures += 1
                self.io.record("timeout", node=node.id, attempt=failures)
                if failures >= node.retries:
                    return await self._menu_exhausted(node)
                if node.timeout_prompt:
                    await self._speak(node.id, node.timeout_prompt, voice=node.voice)
                continue
            self.io.record("digits", node=node.id, digits=key)
            option = node.options.get(key)
            if option is not None:
                self.io.record("choice", node=node.id, digit=key, label=option.label, next=option.next)
                self.path.append({"menu": node.id, "digit": key, "label": option.label})
                self._assign(node.id, option.set)
                return option.next
            failures += 1
            self.io.record("invalid", node=node.id, digit=key, attempt=failures)
            self.io.clear_digits()  # the rest of a mistyped burst is not an answer
            if node.invalid_prompt:
                await self._speak(node.id, node.invalid_prompt, voice=node.voice)
            if failures >= node.retries:
                return await self._menu_exhausted(node)

    async def _menu_exhausted(self, node: MenuNode) -> str | None:
        self.io.record("menu_exhausted", node=node.id, next=node.default)
        if node.default is None:
            await self._end("hangup", "menu_exhausted")
        return node.default

    async def _gather(self, node: GatherNode) -> str | None:
        answer = None
        for _attempt in range(node.retries):
            key = await self.io.read_digit(0) if node.input != "speech" else None
            if key is None and node.prompt:
                await self._speak(node.id, node.prompt, voice=node.voice)
            answer = await collect(self.io, node, self.variables.get("language", self.flow.language), key)
            if answer is None:
                self.io.record("timeout", node=node.id)
                continue
            self.io.record("digits" if answer.source == "dtmf" else "speech", node=node.id, value=answer.value)
            value = match_choice(node, answer)
            if value is not None:
                self._assign(node.id, {node.into: value}, literal=True)
                return node.next
            self.io.record("no_match", node=node.id, value=answer.value)
        if answer is None:
            self._assign(node.id, {node.into: ""}, literal=True)
            return node.on_timeout or node.next
        self._assign(node.id, {node.into: ""}, literal=True)
        return node.on_no_match or node.on_timeout or node.next

    # -- logic --------------------------------------------------------------

    def _assign(self, node_id: str, templates: dict[str, str], *, literal: bool = False) -> None:
        if not templates:
            return
        values = {}
        for name, value in templates.items():  # in order: later values may use earlier ones
            values[name] = self.variables[name] = value if literal else render(value, self.variables)
        self.io.record("set", node=node_id, values=values)

    async def _set(self, node: SetNode) -> str | None:
        self._assign(node.id, node.values)
        return node.next

    async def _branch(self, node: BranchNode) -> str | None:
        now = self.clock()
        for index, rule in enumerate(node.rules):
            if rule.test.holds(self.variables, now):
                self.io.record("branch", node=node.id, rule=index + 1, next=rule.next)
                return rule.next
        self.io.record("branch", node=node.id, rule="else", next=node.otherwise)
        return node.otherwise

    async def _goto(self, node: GotoNode) -> str | None:
        return node.next

    async def _http(self, node: HttpNode) -> str | None:
        try:
            if self.http_client is not None:
                values = await call_webhook(self.http_client, node, self.variables)
            else:
                async with httpx.AsyncClient() as client:
                    values = await call_webhook(client, node, self.variables)
        except WebhookError as exc:
            self.io.record("webhook", node=node.id, ok=False, error=str(exc))
            log.warning("flow %s: webhook %s failed: %s", self.flow.name, node.id, exc)
            return node.on_error or node.next
        self.io.record("webhook", node=node.id, ok=True, values=values)
        self.variables.update(values)
        return node.next

    # -- endings ------------------------------------------------------------

    async def _transfer(self, node: TransferNode) -> str | None:
        target = render(node.target, self.variables).strip()
        # Recorded before it starts: a transfer that works ends the call, and this task with it.
        self.io.record("transfer", node=node.id, target=target, method=node.method, trunk=node.trunk)
        accepted = bool(target) and await self.io.transfer(target, method=node.method, trunk=node.trunk)
        self.io.record("transfer_result", node=node.id, accepted=accepted)
        if accepted:
            await self._end("transfer", None)  # the call now belongs to the transfer target
            return None
        if node.on_failure is None:
            await self._end("hangup", "transfer_failed")
        return node.on_failure

    async def _agent(self, node: AgentNode) -> str | None:
        context = self.handoff_context(node)
        self.io.record("handoff", node=node.id, agent=node.agent, reason=context.reason)
        self.outcome = "handoff"
        await self.io.handoff(node.agent, context)
        if node.next is None:
            await self._end("handoff", "agent_finished")
        return node.next

    async def _hangup(self, node: HangupNode) -> str | None:
        await self._end("hangup", node.reason)
        return None

    def handoff_context(self, node: AgentNode) -> HandoffContext:
        info = self.io.info
        return HandoffContext(
            agent=node.agent,
            caller_number=info.caller,
            caller_name=info.caller_name,
            called_number=info.called,
            language=self.variables.get("language", self.flow.language),
            reason=render(node.reason, self.variables),
            path=[dict(step) for step in self.path],
            variables=flow_variables(self.flow, self.variables),
            sip_headers=x_headers(info.sip_headers),
            context={name: render(value, self.variables) for name, value in node.context.items()},
        )
