"""Which datagrams belong to a call, and where its media goes back to (sans-IO).

Symmetric RTP (RFC 4961) sends our media to the address the caller's media
comes from, which is what gets audio through NAT. Latching on any datagram
lets whoever reaches the port take the call's audio away and talk into it,
so this follows the strict-RTP modes in the field (Asterisk ``strictrtp``,
rtpengine's strict source):

* Only valid RTP latches: version 2, a payload type the SDP negotiated, a
  header that adds up.
* The first such packet from the address the SDP signalled locks at once.
  From anywhere else (the caller is behind NAT) it takes ``LEARN_RUN``
  packets in sequence with one SSRC (RFC 3550 §A.1's probation).
* Once locked, only the locked source reaches the call. Another source takes
  over only after ``REBIND_RUN`` in-sequence packets of one SSRC while the
  locked source has been silent for ``REBIND_SILENCE_S``: a NAT rebinding.
  Until then its packets are dropped, so nothing is injected meanwhile.
  The signalled address itself is trusted at once (a re-INVITE moved media).
* From the locked source, audio (codec and comfort noise) and telephone-event
  each keep one SSRC: SIPp and some gateways send events on their own SSRC.
  Another SSRC of the same kind is taken after the current one has been
  silent ``SSRC_SWITCH_SILENCE_S`` (a new stream) or after a new offer/answer
  (:meth:`RtpLatch.set_signalled`); interleaved with the current one, never.
* RTCP latches only on a valid compound packet led by an SR or RR (RFC 3550
  §6.1) from the signalled RTCP address, or whose sender is the SSRC the RTP
  lock accepted (an off-path stranger cannot know it).

The driver (``rtp/socket.py``) feeds each datagram with the time it was read
and acts on the verdict; ``changes`` tells it when the addresses moved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .packet import RTCP_SECOND_OCTET_MAX, RTCP_SECOND_OCTET_MIN, RTP_HEADER_SIZE, RtpError, RtpPacket
from .rtcp import RTCP_RR, RTCP_SR, parse_compound

__all__ = [
    "DROP",
    "ACCEPT_RTP",
    "ACCEPT_RTCP",
    "LEARN_RUN",
    "REBIND_RUN",
    "REBIND_SILENCE_S",
    "SSRC_SWITCH_SILENCE_S",
    "LatchCounters",
    "RtpLatch",
    "rtcp_sender_ssrc",
]

Addr = tuple[str, int]

# Verdicts of RtpLatch.rtp.
DROP = 0
ACCEPT_RTP = 1
ACCEPT_RTCP = 2  # RTCP multiplexed on the RTP port (RFC 5761 §4) from the locked source

# RFC 3550 §A.1: a source is valid after MIN_SEQUENTIAL (2) packets in sequence.
LEARN_RUN = 2
# A new source must prove itself for 200 ms of 20 ms packets...
REBIND_RUN = 10
# ...while the locked one says nothing: longer than any jitter spike, shorter
# than a caller would notice on a real NAT rebinding.
REBIND_SILENCE_S = 0.5
# An SSRC change on the locked source is a new stream only after a pause;
# a packet interleaved with the current stream is not one.
SSRC_SWITCH_SILENCE_S = 0.2

RTCP_MIN_SIZE = 8  # header and sender SSRC (RFC 3550 §6.4.2)
_RTP_VERSION_BITS = 0x80  # version 2 in the top two bits
_VERSION_MASK = 0xC0
_PLAIN_FIRST_OCTET = 0x80  # V=2, no padding, extension or CSRCs: nothing to check further
_PT_MASK = 0x7F
_SEQ_MASK = 0xFFFF
_HEADER = struct.Struct("!BBH4xI")  # first octets, sequence, (timestamp skipped), SSRC
_RTCP_HEAD = struct.Struct("!BB")
_NEVER = float("-inf")


@dataclass(slots=True)
class LatchCounters:
    """Why datagrams were dropped, and how often the lock moved."""

    invalid: int = 0  # not RTP we negotiated: short, wrong version, unknown payload type, bad header
    foreign_source: int = 0  # valid RTP from an address that is not the locked one
    foreign_ssrc: int = 0  # from the locked address, interleaved with its current stream
    rtcp_rejected: int = 0  # RTCP that is invalid or from an address we did not latch
    rebinds: int = 0  # the lock moved to another source (NAT rebinding, re-INVITE)
    ssrc_changes: int = 0  # the locked source started a new stream

    @property
    def dropped(self) -> int:
        return self.invalid + self.foreign_source + self.foreign_ssrc + self.rtcp_rejected

    def as_dict(self) -> dict[str, int]:
        return {"invalid": self.invalid, "foreign_source": self.foreign_source, "foreign_ssrc": self.foreign_ssrc,
                "rtcp_rejected": self.rtcp_rejected, "rebinds": self.rebinds, "ssrc_changes": self.ssrc_changes}


def rtcp_sender_ssrc(data: bytes) -> int | None:
    """The sender SSRC of a valid compound RTCP packet led by an SR or RR, else None (RFC 3550 §A.2)."""
    if len(data) < RTCP_MIN_SIZE:
        return None
    b0, packet_type = _RTCP_HEAD.unpack_from(data)
    if b0 & _VERSION_MASK != _RTP_VERSION_BITS or packet_type not in (RTCP_SR, RTCP_RR):
        return None
    try:
        packets = parse_compound(data)
    except (RtpError, ValueError):
        return None
    return packets[0].ssrc  # type: ignore[union-attr]  # SR or RR, checked above


class RtpLatch:
    """One call's RTP/RTCP source lock. ``now`` is a monotonic time in seconds."""

    __slots__ = ("audio_types", "event_types", "signalled", "signalled_rtcp", "source", "rtcp_source",
                 "ssrc", "event_ssrc", "heard", "audio_heard", "event_heard", "changes", "counters",
                 "_candidate", "_candidate_seq", "_candidate_run", "learning")

    def __init__(self, audio_types: frozenset[int] = frozenset(), event_types: frozenset[int] = frozenset()) -> None:
        self.audio_types = audio_types  # the codec's and comfort noise's payload types
        self.event_types = event_types  # telephone-event (RFC 4733)
        self.signalled: Addr | None = None  # from the SDP (c=, m=)
        self.signalled_rtcp: Addr | None = None  # a=rtcp (RFC 3605), else m= port + 1
        self.source: Addr | None = None  # the locked RTP source: the only one that reaches the call
        self.rtcp_source: Addr | None = None
        self.ssrc: int | None = None  # the locked source's audio SSRC
        self.event_ssrc: int | None = None  # and its telephone-event SSRC
        self.heard = _NEVER  # when the locked source was last accepted
        self.audio_heard = _NEVER
        self.event_heard = _NEVER
        self.changes = 0  # bumped whenever source or rtcp_source moves
        self.counters = LatchCounters()
        self._candidate: tuple[Addr, int] | None = None  # (address, SSRC) trying to take over
        self._candidate_seq = 0
        self._candidate_run = 0
        # The first source's packets while it proves itself: handed over once it locks, so a
        # caller behind NAT loses no audio at the start of the call (the jitter buffer orders them).
        self.learning: list[bytes] = []

    def take_learnt(self) -> list[bytes]:
        """Packets of the source that just locked, received before it won; in arrival order."""
        learnt, self.learning = self.learning, []
        return learnt

    def set_payload_types(self, audio: frozenset[int], events: frozenset[int]) -> None:
        self.audio_types, self.event_types = audio, events

    def set_signalled(self, rtp: Addr, rtcp: Addr) -> None:
        """A new SDP offer/answer: its address is trusted, and it may start new streams (RFC 3264 §8),
        so the SSRCs are learnt again while the source lock stays."""
        self.signalled, self.signalled_rtcp = rtp, rtcp
        self.ssrc = self.event_ssrc = None

    # -- RTP ---------------------------------------------------------------------------------------------

    def rtp(self, data: bytes, addr: Addr, now: float) -> int:
        """The verdict on one datagram read from the RTP port: DROP, ACCEPT_RTP or ACCEPT_RTCP."""
        if len(data) < RTP_HEADER_SIZE:
            return self._short(data, addr)
        b0, b1, sequence, ssrc = _HEADER.unpack_from(data)
        if addr == self.source and b0 == _PLAIN_FIRST_OCTET:
            # The common case, kept short: it runs for every packet of every call.
            payload_type = b1 & _PT_MASK
            if payload_type in self.audio_types:
                if ssrc == self.ssrc:
                    self.heard = self.audio_heard = now
                    return ACCEPT_RTP
                return self._new_audio_ssrc(ssrc, now)
            if payload_type in self.event_types:
                if ssrc == self.event_ssrc:
                    self.heard = self.event_heard = now
                    return ACCEPT_RTP
                return self._new_event_ssrc(ssrc, now)
        if b0 & _VERSION_MASK != _RTP_VERSION_BITS:
            self.counters.invalid += 1
            return DROP
        if RTCP_SECOND_OCTET_MIN <= b1 <= RTCP_SECOND_OCTET_MAX:
            if self.source is not None and addr == self.source:
                return ACCEPT_RTCP
            self.counters.rtcp_rejected += 1
            return DROP
        payload_type = b1 & _PT_MASK
        audio = payload_type in self.audio_types
        if not audio and payload_type not in self.event_types:
            self.counters.invalid += 1
            return DROP
        if addr == self.source:  # CSRCs, extension or padding: the stream's parser checks the rest
            return self._new_audio_ssrc(ssrc, now) if audio else self._new_event_ssrc(ssrc, now)
        if b0 != _PLAIN_FIRST_OCTET and not _well_formed(data):
            self.counters.invalid += 1
            return DROP
        return self._from_elsewhere(data, addr, audio, sequence, ssrc, now)

    def _short(self, data: bytes, addr: Addr) -> int:
        # An RTCP RR with no report blocks is 8 octets: shorter than any RTP header.
        if len(data) >= RTCP_MIN_SIZE and RTCP_SECOND_OCTET_MIN <= data[1] <= RTCP_SECOND_OCTET_MAX:
            if self.source is not None and addr == self.source:
                return ACCEPT_RTCP
            self.counters.rtcp_rejected += 1
        else:
            self.counters.invalid += 1
        return DROP

    def _new_audio_ssrc(self, ssrc: int, now: float) -> int:
        current = self.ssrc
        if current is not None and ssrc != current:
            if now - self.audio_heard < SSRC_SWITCH_SILENCE_S:
                self.counters.foreign_ssrc += 1
                return DROP
            self.counters.ssrc_changes += 1
        self.ssrc = ssrc
        self.heard = self.audio_heard = now
        return ACCEPT_RTP

    def _new_event_ssrc(self, ssrc: int, now: float) -> int:
        current = self.event_ssrc
        if current is not None and ssrc != current:
            if now - self.event_heard < SSRC_SWITCH_SILENCE_S:
                self.counters.foreign_ssrc += 1
                return DROP
            self.counters.ssrc_changes += 1
        self.event_ssrc = ssrc
        self.heard = self.event_heard = now
        return ACCEPT_RTP

    def _from_elsewhere(self, data: bytes, addr: Addr, audio: bool, sequence: int, ssrc: int, now: float) -> int:
        """Valid RTP from an address that is not the locked source: a candidate, dropped until it wins."""
        candidate = (addr, ssrc)
        if candidate == self._candidate and sequence == (self._candidate_seq + 1) & _SEQ_MASK:
            self._candidate_run += 1
        else:  # one candidate at a time: a new one, or a break in sequence, starts the count again
            self._candidate, self._candidate_run = candidate, 1
            self.learning.clear()
        self._candidate_seq = sequence
        if addr == self.signalled:
            wins = True
        elif self.source is None:
            wins = self._candidate_run >= LEARN_RUN
        else:
            wins = self._candidate_run >= REBIND_RUN and now - self.heard >= REBIND_SILENCE_S
        if not wins:
            if self.source is None:
                self.learning.append(data)  # at most LEARN_RUN - 1: the run resets or wins before more
            self.counters.foreign_source += 1
            return DROP
        if self.source is not None:
            self.counters.rebinds += 1
        self.source = addr
        self.changes += 1
        self._candidate = None
        self.heard = now
        self.ssrc, self.audio_heard = (ssrc, now) if audio else (None, _NEVER)
        self.event_ssrc, self.event_heard = (None, _NEVER) if audio else (ssrc, now)
        return ACCEPT_RTP

    # -- RTCP --------------------------------------------------------------------------------------------

    def rtcp(self, data: bytes, addr: Addr) -> bool:
        """Whether a datagram read from the RTCP port reaches the call (the stream parses it)."""
        if addr == self.rtcp_source:
            return True
        sender = rtcp_sender_ssrc(data)
        if sender is None or not (addr == self.signalled_rtcp
                                  or (self.source is not None and sender in (self.ssrc, self.event_ssrc))):
            self.counters.rtcp_rejected += 1
            return False
        self.rtcp_source = addr
        self.changes += 1
        return True


def _well_formed(data: bytes) -> bool:
    """CSRC list, header extension and padding fit in the datagram (RFC 3550 §5.1, §5.3.1)."""
    try:
        RtpPacket.parse(data, keep_extension=False)
    except RtpError:
        return False
    return True
