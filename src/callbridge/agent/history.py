"""The conversation so far, shaped for priming a fresh provider session.

A renewed (or reconnected) session starts with no memory; it gets the
conversation back as text turns. Providers limit what they accept (Nova
Sonic: 40 KB of history, 1 KB a message, and it must open with the user), so
the history is fitted: same-role turns merged, long turns split, the oldest
dropped first, and a leading agent turn dropped so the user speaks first.
"""

from __future__ import annotations

from typing import Any

from .realtime import HistoryLimits, SessionSetup

ROLE_FOR_ENTRY = {"user": "user", "agent": "assistant"}


def conversation_turns(transcript: list[dict[str, Any]]) -> list[dict[str, str]]:
    """User and agent turns from a call transcript; an interrupted agent turn counts as what was heard."""
    turns = []
    for entry in transcript:
        role = ROLE_FOR_ENTRY.get(entry.get("role", ""))
        text = (entry.get("text") or "").strip()
        if entry.get("cut_by_error"):
            continue  # the start of an answer a failing provider never finished
        if role is not None and text:
            turns.append({"role": role, "text": text})
    return turns


def unanswered_user_turn(transcript: list[dict[str, Any]], *, cut_short: bool) -> tuple[str | None, int | None]:
    """The caller's last words if no complete answer followed them, and the agent turn to mark
    ``cut_by_error`` (if any).

    ``cut_short``: the session failed mid-answer, so an agent entry after those words is only
    the start of an answer the caller never got (that entry is the one returned to mark)."""
    cut = None
    for index in range(len(transcript) - 1, -1, -1):
        role = transcript[index].get("role")
        if role == "agent":
            if not cut_short:
                return None, cut
            cut, cut_short = index, False  # only the answer in progress was cut
        elif role == "user":
            return transcript[index].get("text") or None, cut
    return None, cut


def primed_setup(setup: SessionSetup, turns: list[dict[str, str]], limits: HistoryLimits) -> SessionSetup:
    """The first session's setup for a renewed one: the conversation so far, fitted; no greeting."""
    return SessionSetup(instructions=setup.instructions, language=setup.language, voice=setup.voice,
                        tools=setup.tools, history=fit_history(turns, limits), greeting=None)


def fit_history(turns: list[dict[str, str]], limits: HistoryLimits) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {"role": turn["role"], "text": f"{merged[-1]['text']} {turn['text']}"}
        else:
            merged.append(dict(turn))
    pieces = [{"role": turn["role"], "text": part}
              for turn in merged for part in split_text(turn["text"], limits.message_bytes)]
    total = sum(_size(piece) for piece in pieces)
    start = 0
    while start < len(pieces) and (total > limits.total_bytes or pieces[start]["role"] != "user"):
        total -= _size(pieces[start])
        start += 1
    return pieces[start:]


def split_text(text: str, max_bytes: int) -> list[str]:
    """Pieces of at most ``max_bytes`` UTF-8 bytes, cut at spaces where possible."""
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > max_bytes:
        cut = _prefix_within(rest, max_bytes)
        space = rest.rfind(" ", 0, cut + 1)
        if space > 0:
            cut = space
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        parts.append(rest)
    return parts


def _prefix_within(text: str, max_bytes: int) -> int:
    """The longest prefix length (in characters) whose UTF-8 form fits."""
    encoded = text.encode()[:max_bytes]
    return len(encoded.decode(errors="ignore"))


def _size(piece: dict[str, str]) -> int:
    return len(piece["text"].encode())
