"""Collecting caller input for ``gather``: digits, speech, or a race of both."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from .io import FlowIO
from .nodes import GatherNode


@dataclass(frozen=True)
class Input:
    source: str  # "dtmf" or "speech"
    value: str


async def collect_digits(io: FlowIO, node: GatherNode, first: str | None = None) -> str:
    """Keys until ``num_digits``, the finish key, or an inter-digit timeout."""
    digits = ""
    key = first if first is not None else await io.read_digit(node.first_digit_timeout)
    while key is not None:
        if key == node.finish_on_key:
            break
        digits += key
        if node.num_digits and len(digits) >= node.num_digits:
            break
        key = await io.read_digit(node.inter_digit_timeout)
    return digits


async def collect(io: FlowIO, node: GatherNode, language: str, first: str | None = None) -> Input | None:
    """One answer from the caller, or ``None`` if they gave none in time."""
    if node.input == "dtmf" or first is not None:
        digits = await collect_digits(io, node, first)
        return Input("dtmf", digits) if digits else None
    hints = list(node.hints) + [phrase for phrase in node.choices if not _is_keys(phrase)]
    if node.input == "speech":
        text = await io.listen(timeout=node.timeout, language=language, hints=hints)
        return Input("speech", text) if text and text.strip() else None
    return await _race(io, node, language, hints)


async def _race(io: FlowIO, node: GatherNode, language: str, hints: list[str]) -> Input | None:
    """Listen and wait for a key at once; whichever answers first wins."""
    key_task = asyncio.ensure_future(io.read_digit(node.first_digit_timeout))
    speech_task = asyncio.ensure_future(io.listen(timeout=node.timeout, language=language, hints=hints))
    pending = {key_task, speech_task}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if key_task in done and key_task.result() is not None:
                speech_task.cancel()
                digits = await collect_digits(io, node, key_task.result())
                return Input("dtmf", digits) if digits else None
            if speech_task in done and (heard := speech_task.result() or "").strip():
                key_task.cancel()
                return Input("speech", heard)
        return None
    finally:
        for task in (key_task, speech_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(key_task, speech_task, return_exceptions=True)


def _is_keys(text: str) -> bool:
    return bool(text) and all(char in "0123456789*#" for char in text)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def match_choice(node: GatherNode, answer: Input) -> str | None:
    """The value for the caller's answer; without choices, the answer itself."""
    if not node.choices:
        return answer.value
    if answer.source == "dtmf":
        return node.choices.get(answer.value)
    said = f" {_words(answer.value)} "
    # Longest phrase first, so "not sure" beats "sure".
    for phrase in sorted(node.choices, key=len, reverse=True):
        if not _is_keys(phrase) and f" {_words(phrase)} " in said:
            return node.choices[phrase]
    return None
