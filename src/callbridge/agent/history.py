"""The conversation so far, shaped for priming a fresh provider session.

A renewed (or reconnected) session starts with no memory; it gets the
conversation back as text turns. Providers limit what they accept (Nova
Sonic: 40 KB of history, 1 KB a message, and it must open with the user), so
the history is fitted: same-role turns merged, long turns split, the oldest
dropped first, and a leading agent turn dropped so the user speaks first.
"""

from __future__ import annotations

from typing import Any

from .realtime import HistoryLimits

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
