"""A callee's media port stood in for by the test: it keeps every RTP packet the server sends there."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import NamedTuple

from . import media_assets as ma


class RtpPacket(NamedTuple):
    arrival: float  # time.monotonic() when it came in
    payload_type: int
    sequence: int
    timestamp: int
    payload: bytes  # past CSRCs and any header extension, without padding


class RtpCapture:
    """A UDP socket on 127.0.0.1 (give ``port`` to the SDP); a thread keeps each RTP packet as an RtpPacket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[RtpPacket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) >= 12 and data[0] >> 6 == 2:  # RTP version 2 (RFC 3550 §5.1)
                sequence, timestamp = struct.unpack("!HI", data[2:8])
                self.packets.append(RtpPacket(time.monotonic(), data[1] & 0x7F, sequence, timestamp,
                                              ma.rtp_payload(data)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
