"""Tools an agent has on a call: transfer to a person, end the call, send keys.

They act on the call through its :class:`~callbridge.agent.callport.CallPort`.
Transfer and hang-up wait until the agent has finished saying its last
sentence ("Let me put you through…"), so the caller hears why the line changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .callport import CallPort
from .tools import ToolContext, tool

LAST_WORDS_TIMEOUT_S = 20.0
CALL_CONTROL_TOOLS = ("transfer_to_human", "end_call", "send_dtmf")


def call_control_tools(call: CallPort, last_played: Callable[[], asyncio.Future | None],
                       operator_uri: str | None) -> list[Any]:
    """The call-control tools; ``transfer_to_human`` only when there is a person to transfer to."""

    async def after_last_words() -> None:
        future = last_played()
        if future is not None and not future.done():
            try:
                await asyncio.wait_for(asyncio.shield(future), LAST_WORDS_TIMEOUT_S)
            except TimeoutError:
                pass

    @tool(timeout=LAST_WORDS_TIMEOUT_S + 40)
    async def transfer_to_human(ctx: ToolContext) -> dict:
        """Transfer the caller to a human operator."""
        assert operator_uri is not None  # only offered with one
        await after_last_words()
        accepted = await call.transfer(operator_uri)
        return {"transferred": accepted, "target": operator_uri}

    @tool(timeout=LAST_WORDS_TIMEOUT_S + 5)
    async def end_call(ctx: ToolContext) -> dict:
        """End the call after saying goodbye."""
        await after_last_words()
        await call.hangup("agent_end_call")
        return {"ended": True}

    @tool(timeout=10)
    async def send_dtmf(ctx: ToolContext, digits: str) -> dict:
        """Send key presses on the call, for example to answer another phone menu.

        Args:
            digits: the keys to press: 0-9, *, #, A-D; w pauses half a second.
        """
        call.send_dtmf(digits)
        return {"sent": digits}

    tools = [end_call, send_dtmf]
    if operator_uri:
        tools.insert(0, transfer_to_human)
    return tools
