"""DTMF from every source a SIP call can carry, merged into one digit stream.

Digits arrive as RFC 4733 telephone-events (:mod:`.rfc4733`), SIP INFO
bodies (parsed by the SIP layer) or in-band tones (:mod:`.inband`). Many
trunks send RFC 4733 *and* leave the tones in the audio, so the same key
press can show up twice; :class:`DtmfMerger` reports it once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .inband import InbandDigit, InbandDtmfDetector, InbandThresholds, dtmf_sequence, dtmf_tone, dual_tone
from .rfc4733 import (
    DTMF_DIGITS,
    DtmfDigit,
    EventPacket,
    Rfc4733Receiver,
    TelephoneEvent,
    dial_string_packets,
    digit_packets,
    plan_dial_string,
)

DtmfSource = Literal["rfc4733", "info", "inband"]
SOURCES: tuple[DtmfSource, ...] = ("rfc4733", "info", "inband")

# The same key seen from another source within this window is one press.
# In-band detection lags the RFC 4733 start packet by ~40 ms and INFO rides
# the signalling path, so allow a comfortable margin; real presses of one
# key are at least ~100 ms apart (Q.24 cycle time), usually far more.
DEFAULT_DUPLICATE_WINDOW_S = 0.2


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press from one source; ``at`` is in seconds on the caller's clock."""

    digit: str
    source: DtmfSource
    at: float
    duration_ms: float | None = None

    def __post_init__(self) -> None:
        # SIP INFO bodies may carry lower-case a-d
        object.__setattr__(self, "digit", self.digit.upper())
        if len(self.digit) != 1 or self.digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {self.digit!r}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown DTMF source: {self.source!r}")


@dataclass(slots=True)
class _Accepted:
    event: DtmfEvent
    matched: set[DtmfSource] = field(default_factory=set)


class DtmfMerger:
    """Emit each key press once, whichever sources report it (sans-IO).

    An event is a duplicate when an already emitted event for the same digit
    came from a *different* source within ``window_s``, and that emitted
    event has not already absorbed a report from this source (so two real
    presses are not folded into one). Events from the same source are never
    merged: each source de-duplicates itself.

    With ``prefer_rfc4733`` (default), the first RFC 4733 event proves the
    trunk signals out-of-band; in-band reports are dropped from then on and
    :attr:`inband_enabled` turns false so the caller can stop running the
    tone detector for the rest of the call.
    """

    def __init__(self, window_s: float = DEFAULT_DUPLICATE_WINDOW_S, prefer_rfc4733: bool = True) -> None:
        self.window_s = window_s
        self.prefer_rfc4733 = prefer_rfc4733
        self.rfc4733_seen = False
        self._recent: deque[_Accepted] = deque()

    @property
    def inband_enabled(self) -> bool:
        """Whether in-band detection is still worth running on this call."""
        return not (self.prefer_rfc4733 and self.rfc4733_seen)

    def push(self, event: DtmfEvent) -> DtmfEvent | None:
        """Offer an event; returns it if it is a new key press, else ``None``."""
        if event.source == "rfc4733":
            self.rfc4733_seen = True
        self._expire(event.at)
        duplicate_of = self._find_original(event)
        if duplicate_of is not None:
            duplicate_of.matched.add(event.source)
            return None
        if event.source == "inband" and not self.inband_enabled:
            return None
        self._recent.append(_Accepted(event, {event.source}))
        return event

    def _find_original(self, event: DtmfEvent) -> _Accepted | None:
        for accepted in self._recent:
            if (
                accepted.event.digit == event.digit
                and event.source not in accepted.matched
                and abs(accepted.event.at - event.at) <= self.window_s
            ):
                return accepted
        return None

    def _expire(self, now: float) -> None:
        # Sources can deliver slightly out of order, so keep anything still
        # within the window of the newest time, on either side.
        while self._recent and now - self._recent[0].event.at > self.window_s:
            self._recent.popleft()


__all__ = [
    "DEFAULT_DUPLICATE_WINDOW_S",
    "DTMF_DIGITS",
    "DtmfDigit",
    "DtmfEvent",
    "DtmfMerger",
    "DtmfSource",
    "EventPacket",
    "InbandDigit",
    "InbandDtmfDetector",
    "InbandThresholds",
    "Rfc4733Receiver",
    "TelephoneEvent",
    "dial_string_packets",
    "digit_packets",
    "dtmf_sequence",
    "dtmf_tone",
    "dual_tone",
    "plan_dial_string",
]
