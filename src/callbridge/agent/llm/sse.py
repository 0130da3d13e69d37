"""A sans-IO Server-Sent Events parser: feed it bytes, get events back.

It follows the WHATWG event-stream rules that matter for LLM streaming:
lines end in CRLF, LF or CR (a CRLF may be split across two chunks),
``:`` starts a comment, ``data`` lines of one event are joined with
``\\n``, a blank line dispatches the event, and one optional space after
the colon is dropped. Lines are decoded only once complete, so a UTF-8
character split across chunks survives. No I/O happens here, which keeps
the parser trivially testable with any chunking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DONE_SENTINEL", "SseError", "SseEvent", "SseParser"]

# OpenAI-style streams end with this payload instead of closing cleanly.
DONE_SENTINEL = "[DONE]"

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


class SseError(ValueError):
    """The byte stream cannot be an event stream (e.g. an endless line)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None

    @property
    def is_done(self) -> bool:
        return self.data == DONE_SENTINEL


class SseParser:
    """Incremental parser; call :meth:`feed` per chunk and :meth:`close` at EOF."""

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        self._max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._skip_lf = False  # the last chunk ended in CR; a leading LF belongs to it
        self._first_line = True
        self._data: list[str] = []
        self._event_type = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        events: list[SseEvent] = []
        consumed = 0
        for match in _LINE_END.finditer(self._buffer):
            line = bytes(self._buffer[consumed:match.start()])
            consumed = match.end()
            if match.group() == b"\r" and consumed == len(self._buffer):
                self._skip_lf = True
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        del self._buffer[:consumed]
        if len(self._buffer) > self._max_line_bytes:
            raise SseError(f"line longer than {self._max_line_bytes} bytes")
        return events

    def close(self) -> list[SseEvent]:
        """End of stream. Per the spec an undispatched trailing event is dropped."""
        self._buffer.clear()
        self._data.clear()
        self._event_type = ""
        return []

    def _process_line(self, raw: bytes) -> SseEvent | None:
        line = raw.decode("utf-8", errors="replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are irrelevant to a single HTTP response
        return None

    def _dispatch(self) -> SseEvent | None:
        event_type, self._event_type = self._event_type, ""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        return SseEvent(data=data, event=event_type or "message", id=self._last_id)
