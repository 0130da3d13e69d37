"""Every DTMF path of one call feeding one stream of key presses (sans-IO).

RFC 4733 packets, SIP INFO bodies and tones in the decoded audio all end up
as :class:`DtmfEvent` with their source; the merger reports each press once.
Times are the caller's monotonic clock in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ..codecs.base import PcmArray
from . import DtmfEvent, DtmfMerger
from .inband import InbandDtmfDetector
from .rfc4733 import DEFAULT_CLOCK_RATE, Rfc4733Receiver

InbandMode = Literal["auto", "always", "never"]


def inband_wanted(mode: InbandMode, telephone_event_negotiated: bool) -> bool:
    """``auto`` runs the tone detector only when the call cannot carry RFC 4733
    (the same rule PBXes call dtmfmode=auto); ``always`` also catches trunks that
    negotiate telephone-event and then send tones anyway."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return not telephone_event_negotiated


class DtmfCollector:
    def __init__(self, *, sample_rate: int, inband: bool, on_digit: Callable[[DtmfEvent], None],
                 clock_rate: int = DEFAULT_CLOCK_RATE) -> None:
        self.on_digit = on_digit
        self.rfc4733 = Rfc4733Receiver(clock_rate)
        self.merger = DtmfMerger()
        self.sample_rate = sample_rate
        self._detector = InbandDtmfDetector(sample_rate) if inband else None
        self._samples_fed = 0

    @property
    def wants_audio(self) -> bool:
        return self._detector is not None

    @property
    def inband_active(self) -> bool:
        return self._detector is not None and self.merger.inband_enabled

    def on_telephone_event(self, timestamp: int, marker: bool, payload: bytes, now: float,
                           ssrc: int | None = None) -> None:
        for digit in self.rfc4733.feed(timestamp, marker, payload, ssrc):
            self._offer(DtmfEvent(digit.digit, "rfc4733", now, digit.duration_ms))

    def on_info(self, digit: str, now: float, duration_ms: float | None = None) -> None:
        self._offer(DtmfEvent(digit, "info", now, duration_ms))

    def on_audio(self, pcm: PcmArray, now: float) -> None:
        """Feed one tick of decoded caller audio (``now`` is when it was played out)."""
        detector = self._detector
        if detector is None:
            return
        if not self.merger.inband_enabled:
            self._detector = None  # the trunk signals out-of-band: save the CPU for the rest of the call
            return
        end = self._samples_fed + len(pcm)
        for found in detector.feed(pcm):
            # Date the press from where its tone began, not from when it qualified.
            at = now - (end - found.sample_offset) / self.sample_rate
            self._offer(DtmfEvent(found.digit, "inband", at))
        self._samples_fed = end

    def close(self, now: float) -> None:
        """Report an RFC 4733 event whose end packets never came."""
        for digit in self.rfc4733.flush():
            self._offer(DtmfEvent(digit.digit, "rfc4733", now, digit.duration_ms))

    def _offer(self, event: DtmfEvent) -> None:
        accepted = self.merger.push(event)
        if accepted is not None:
            self.on_digit(accepted)
