"""Ending calls whose far end has gone silent on the wire.

A phone that loses power or network, or a NAT binding that expires, sends no
BYE: without this, the call (and its agent session, recording and a
``server.max_calls`` slot) would stay up until a session timer or the
caller's patience ran out. Like rtpengine's and Asterisk's RTP timeout, a
call whose latched peer has sent no RTP for ``media.media_timeout_s`` ends
with end reason ``media_timeout``.

Only RTP from the latched source counts (rtp/latch.py): a stray datagram
from anyone else cannot keep a dead call alive. Held calls are left alone:
on hold the far end may rightly send nothing (RFC 3264 §8.4). Browser legs
have ICE consent checks for the same job.

Sans-IO: :meth:`MediaWatchdog.silent` is given the calls and ``now``
(monotonic, the clock the RTP socket stamps arrivals with).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..media.stream import AudioStream
from .call import Call
from .events import CallStatus

__all__ = ["MediaWatchdog", "Silence", "check_interval"]

# How often the server asks; the timeout is then met within this much.
MAX_CHECK_INTERVAL_S = 5.0


def check_interval(timeout_s: float) -> float:
    return min(MAX_CHECK_INTERVAL_S, timeout_s / 2)


@dataclass(frozen=True, slots=True)
class Silence:
    call: Call
    seconds: float  # since the peer's last RTP, or since the watch began if it never sent any


class MediaWatchdog:
    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        # When each watched call came under watch: the clock for a peer that never sends at all.
        self._watched_since: dict[str, float] = {}

    def silent(self, calls: Iterable[Call], now: float) -> list[Silence]:
        """The watched calls silent for at least the timeout; calls that ended or went on hold are dropped
        from the watch, so a resumed call gets a fresh timeout."""
        watched: dict[str, float] = {}
        found = []
        for call in calls:
            stream = call.leg.stream
            if call.status is not CallStatus.ACTIVE or not isinstance(stream, AudioStream) or stream.hold is not None:
                continue  # not answered yet, a browser leg (no RTP socket), or on hold
            since = self._watched_since.get(call.id, now)
            watched[call.id] = since
            silent_s = now - max(stream.socket.latch.heard, since)
            if silent_s >= self.timeout_s:
                found.append(Silence(call, silent_s))
        self._watched_since = watched
        return found
