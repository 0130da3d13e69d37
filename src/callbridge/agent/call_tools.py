"""Tools every agent has on a call: transfer to a person, end the call, send keys.

They act on the call through the same FlowIO the IVR uses. Transfer and
hang-up wait until the agent has finished saying its last sentence ("Let me
put you through…"), so the caller hears why the line changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .tools import ToolContext, tool

LAST_WORDS_TIMEOUT_S = 20.0


def call_control_tools(io: Any, last_played: Callable[[], asyncio.Future | None], operator_uri: str) -> list:
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
        await after_last_words()
        accepted = await io.transfer(operator_uri, method="refer", trunk=None)
        return {"transferred": accepted, "target": operator_uri}

    @tool(timeout=LAST_WORDS_TIMEOUT_S + 5)
    async def end_call(ctx: ToolContext) -> dict:
        """End the call after saying goodbye."""
        await after_last_words()
        await io.hangup("agent_end_call")
        return {"ended": True}

    @tool(timeout=10)
    async def send_dtmf(ctx: ToolContext, digits: str) -> dict:
        """Send key presses on the call, for example to answer another phone menu.

        Args:
            digits: the keys to press: 0-9, *, #, A-D; w pauses half a second.
        """
        io.stream.send_dtmf(digits)
        return {"sent": digits}

    return [transfer_to_human, end_call, send_dtmf]
