"""Content-Length framing for SIP over TCP/TLS (RFC 3261 §18.3), sans-IO.

Feed received bytes; take out whole messages. The framer bounds how much it
holds so one misbehaving peer cannot grow memory without limit. Any framing
error is final: the stream can no longer be delimited and the connection must
be closed (RFC 3261 §18.3, RFC 4475 ncl / mcl01).
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .grammar import MAX_DIGITS

# Largest header section we buffer before the blank line. Kamailio and
# OpenSIPS cap whole messages at 64 KiB by default; headers beyond that are abuse.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20
_HEAD_END = b"\r\n\r\n"
_LINE_END = re.compile(rb"\r\n")
_DIGITS = re.compile(rb"[0-9]+")


def content_length_of(head: bytes) -> int:
    """The Content-Length of a header section (start line included).

    Header names are matched case-insensitively, in long or compact (``l``)
    form, with white space allowed before the colon and folded values
    unfolded (RFC 3261 §7.3.1). Exactly one numeric value must be present.
    """
    values: list[bytes] = []
    lines = _LINE_END.split(head)
    for index in range(1, len(lines)):  # line 0 is the start line
        line = lines[index]
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue
        name = name.rstrip(b" \t").lower()
        if name != b"content-length" and name != b"l":
            continue
        # Undo folding: continuation lines belong to this value.
        following = index + 1
        while following < len(lines) and lines[following][:1] in (b" ", b"\t"):
            value += b" " + lines[following]
            following += 1
        values.append(value.strip(b" \t"))
    if not values:
        raise SipParseError("Content-Length is required on stream transports")
    if len(values) > 1:
        raise SipParseError("more than one Content-Length")
    value = values[0]
    if _DIGITS.fullmatch(value) is None:
        raise SipParseError(f"bad Content-Length: {value[:20]!r}")
    stripped = value.lstrip(b"0") or b"0"
    if len(stripped) > MAX_DIGITS:
        raise SipParseError("Content-Length too large", 513)
    return int(stripped)


class FramingError(SipParseError):
    """The stream can no longer be delimited.

    ``messages`` are the whole messages framed ahead of the broken one by the
    same ``feed``: they arrived intact, so they count exactly as they would had
    the broken part come in a later segment.
    """

    def __init__(self, reason: str, status: int, messages: list[bytes]) -> None:
        super().__init__(reason, status)
        self.messages = messages


class StreamFramer:
    """Splits a byte stream into SIP messages using Content-Length."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._buffer = bytearray()
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        # Where to resume looking for the blank line (avoids rescanning a
        # slowly arriving header section from the start on every feed).
        self._scan_from = 0
        # Total size of the message at the head of the buffer, once known.
        self._pending: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available.

        Raises :class:`FramingError` when the stream can no longer be framed (the
        connection must then be closed, RFC 3261 §18.3).
        """
        self._buffer += data
        messages: list[bytes] = []
        try:
            return self._frame(messages)
        except SipParseError as exc:
            raise FramingError(exc.reason, exc.status, messages) from None

    def _frame(self, messages: list[bytes]) -> list[bytes]:
        buffer = self._buffer
        while True:
            if self._pending is None:
                # RFC 5626 §3.5.1 / RFC 3261 §7.5: CRLFs between messages are
                # keep-alives, not part of any message.
                skip = 0
                while buffer[skip : skip + 2] == b"\r\n":
                    skip += 2
                if skip:
                    del buffer[:skip]
                    self._scan_from = max(0, self._scan_from - skip)
                end = buffer.find(_HEAD_END, self._scan_from)
                if end < 0:
                    if len(buffer) > self._max_header:
                        raise SipParseError("header section too large", 513)
                    self._scan_from = max(0, len(buffer) - 3)
                    return messages
                if end > self._max_header:
                    raise SipParseError("header section too large", 513)
                length = content_length_of(bytes(buffer[:end]))
                if length > self._max_body:
                    raise SipParseError("body too large", 513)
                self._pending = end + 4 + length
                self._scan_from = 0
            total = self._pending
            if len(buffer) < total:
                return messages
            messages.append(bytes(buffer[:total]))
            del buffer[:total]
            self._pending = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)
