"""The call's side of the agent's transcript: each change becomes one event on the call's stream.

An agent never edits an entry it wrote: it names the turn (the index
:meth:`CallTranscript.add` returned) and publishes what changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import events as ev
from .call import Call


class CallTranscript:
    def __init__(self, call: Call) -> None:
        self._call = call

    def add(self, role: str, text: str | None = None, **details: Any) -> int:
        """A new entry (a user or agent turn, or a note: dtmf, error, usage, fallback); returns its turn."""
        turn = len(self._call.transcript)
        self._call.publish(ev.TurnAdded(turn=turn, role=role, text=text, details=details))
        return turn

    def update(self, turn: int, **changes: Any) -> None:
        self._call.publish(ev.TurnUpdated(turn=turn, changes=changes))

    def tool_called(self, name: str, arguments: Mapping[str, Any] | str) -> int:
        turn = len(self._call.transcript)
        self._call.publish(ev.ToolCalled(turn=turn, name=name, arguments=arguments))
        return turn

    def tool_finished(self, turn: int, name: str, *, ok: bool, duration_ms: float, result: Any = None,
                      error: str | None = None) -> None:
        self._call.publish(ev.ToolResult(turn=turn, name=name, ok=ok, duration_ms=round(duration_ms, 1),
                                         result=result if ok else None, error=None if ok else error))

    def barge_in(self, turn: int, *, planned: str, heard: str, heard_s: float) -> None:
        self._call.publish(ev.BargeIn(turn=turn, planned=planned, heard=heard, heard_s=round(heard_s, 2)))

    def latency(self, turn: int, *, vad: float, stt: float, brain: float, tts_first_audio: float,
                total: float) -> None:
        self._call.publish(ev.TurnLatency(turn=turn, vad=round(vad), stt=round(stt), brain=round(brain),
                                          tts_first_audio=round(tts_first_audio), total=round(total)))

    def renewed(self, *, session: int, reason: str, prepare_ms: float, handover_ms: float,
                replayed_ms: float) -> int:
        turn = len(self._call.transcript)
        self._call.publish(ev.SessionRenewed(turn=turn, session=session, reason=reason,
                                             prepare_ms=round(prepare_ms, 1), handover_ms=round(handover_ms, 1),
                                             replayed_ms=round(replayed_ms, 1)))
        return turn

    def entries(self) -> list[dict[str, Any]]:
        """The transcript so far, as copies (for building a provider's history)."""
        return [dict(entry) for entry in self._call.transcript]
