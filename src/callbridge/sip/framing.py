"""Content-Length framing for SIP over TCP/TLS (RFC 3261 §18.3), sans-IO.

Feed received bytes; take out whole messages. The framer bounds how much it
holds so one misbehaving peer cannot grow memory without limit.
"""

from __future__ import annotations

import re

from .errors import SipParseError

# Largest header section we buffer before the blank line. Kamailio and
# OpenSIPS cap whole messages at 64 KiB by default; headers beyond that are abuse.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


class StreamFramer:
    """Splits a byte stream into SIP messages using Content-Length."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._buffer = bytearray()
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available.

        Raises ``SipParseError`` when the stream can no longer be framed (the
        connection must then be closed, RFC 3261 §18.3).
        """
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # RFC 5626 §3.5.1: CRLF keep-alives between messages are skipped.
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_header:
                    raise SipParseError("header section too large", 513)
                return messages
            head = bytes(self._buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            if match is None:
                raise SipParseError("Content-Length is required on stream transports")
            length = int(match.group(1))
            if length > self._max_body:
                raise SipParseError("body too large", 513)
            total = end + 4 + length
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    @property
    def buffered(self) -> int:
        return len(self._buffer)
