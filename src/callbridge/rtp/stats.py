"""RTP stream statistics and RTCP report scheduling (RFC 3550 §6, App. A).

Sans-IO: every method that depends on time takes ``now`` (monotonic seconds)
and, where an NTP timestamp is needed, ``wall_time`` (Unix seconds).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .rtcp import (
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    ReportBlock,
    SDES_CNAME,
    SdesChunk,
    ntp_from_unix,
    ntp_middle32,
    ntp_short_from_seconds,
    round_trip_time,
    serialize_compound,
)

__all__ = ["ReceiverStats", "SenderStats", "RtcpScheduler"]

# RFC 3550 §A.1 source validation constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
SEQ_MOD = 1 << 16
_SEQ_MASK = SEQ_MOD - 1
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31
_U32 = _TS_MOD - 1

JITTER_GAIN = 1 / 16  # RFC 3550 §6.4.1 / §A.8 smoothing
FRACTION_SCALE = 256  # fraction lost is an 8-bit fixed point number
FRACTION_MAX = 255
MAX_REPORT_BLOCKS = 31

DEFAULT_RTCP_INTERVAL = 5.0  # RFC 3550 §6.2: recommended minimum
RANDOM_SPREAD_MIN = 0.5  # RFC 3550 §6.3.1: interval × [0.5, 1.5]
INITIAL_INTERVAL_FACTOR = 0.5  # RFC 3550 §6.2: first report after half the minimum


@dataclass(slots=True)
class ReceiverStats:
    """Reception statistics for one remote SSRC (RFC 3550 §A.1, §A.3, §A.8)."""

    ssrc: int
    clock_rate: int
    min_sequential: int = MIN_SEQUENTIAL
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0  # count of wraps, shifted (multiple of 2^16)
    bad_seq: int = SEQ_MOD + 1  # never equal to a 16-bit value initially
    probation: int = -1  # -1: no packet seen yet
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0  # timestamp units
    octets: int = 0
    heard_since_report: bool = False
    _last_arrival: float | None = field(default=None, init=False, repr=False)
    _last_ts: int = field(default=0, init=False, repr=False)

    def update(self, seq: int, timestamp: int, arrival: float, payload_size: int = 0) -> bool:
        """Account one received packet; False while the source is on probation
        or when the packet is a stray after a large sequence jump."""
        if self.probation < 0:
            # RFC 3550 §A.1: new source, require MIN_SEQUENTIAL in-order packets.
            self.probation = self.min_sequential
            self.max_seq = (seq - 1) & _SEQ_MASK
        if self.probation > 0:
            if seq == (self.max_seq + 1) & _SEQ_MASK:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._restart(seq)
                    self._count(timestamp, arrival, payload_size)
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False

        udelta = (seq - self.max_seq) & _SEQ_MASK
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD  # RFC 3550 §A.1: wrapped forward
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            # Very large jump: accept only if the next packet confirms it.
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & _SEQ_MASK
                return False
            self._restart(seq)
        # else: duplicate or reordered packet, counted as received (§A.3).
        self._count(timestamp, arrival, payload_size)
        return True

    def _restart(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0

    def _count(self, timestamp: int, arrival: float, payload_size: int) -> None:
        self.received += 1
        self.octets += payload_size
        self.heard_since_report = True
        last_arrival = self._last_arrival
        if last_arrival is not None:
            # RFC 3550 §A.8: D = (Rj - Ri) - (Sj - Si), in timestamp units.
            ts_delta = (timestamp - self._last_ts) & _U32
            if ts_delta >= _TS_HALF:
                ts_delta -= _TS_MOD
            d = (arrival - last_arrival) * self.clock_rate - ts_delta
            self.jitter += (abs(d) - self.jitter) * JITTER_GAIN
        self._last_arrival = arrival
        self._last_ts = timestamp

    @property
    def valid(self) -> bool:
        return self.probation == 0

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self.base_seq + 1 if self.valid else 0

    @property
    def lost(self) -> int:
        """Cumulative lost (RFC 3550 §A.3); negative when duplicates arrived."""
        return self.expected - self.received

    def report_block(self, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """Build a report block and start a new reporting interval (§A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        self.heard_since_report = False
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval * FRACTION_SCALE) // expected_interval, FRACTION_MAX)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_sequence=self.extended_max_seq & _U32,
            jitter=int(self.jitter) & _U32,
            lsr=lsr,
            dlsr=dlsr,
        )


@dataclass(slots=True)
class SenderStats:
    """What we sent, for the SR sender info (RFC 3550 §6.4.1)."""

    ssrc: int
    clock_rate: int
    packet_count: int = 0
    octet_count: int = 0  # payload octets only
    sent_since_report: bool = False
    _last_ts: int = field(default=0, init=False, repr=False)
    _last_send: float = field(default=0.0, init=False, repr=False)

    def on_sent(self, payload_size: int, timestamp: int, now: float) -> None:
        self.packet_count = (self.packet_count + 1) & _U32
        self.octet_count = (self.octet_count + payload_size) & _U32
        self.sent_since_report = True
        self._last_ts = timestamp
        self._last_send = now

    def set_totals(self, packet_count: int, octet_count: int, timestamp: int, now: float) -> None:
        """Same effect as ``on_sent`` for every packet, for senders that keep
        their own counters and only need RTCP every few seconds."""
        self.packet_count = packet_count & _U32
        self.octet_count = octet_count & _U32
        self.sent_since_report = True
        self._last_ts = timestamp
        self._last_send = now

    def rtp_timestamp_at(self, now: float) -> int:
        """RTP time matching ``now`` (§6.4.1: same instant as the NTP field)."""
        elapsed = round((now - self._last_send) * self.clock_rate)
        return (self._last_ts + elapsed) & _U32


@dataclass(slots=True)
class _LastSr:
    lsr: int  # middle 32 bits of its NTP timestamp
    arrival: float  # our monotonic clock


@dataclass(slots=True)
class RtcpScheduler:
    """Decide when RTCP is due and build the compound report (RFC 3550 §6).

    Call :meth:`start`, feed :meth:`on_rtp_received` / :meth:`on_rtp_sent` /
    :meth:`on_rtcp`, and when ``now >= next_due`` send :meth:`build_report`.
    """

    ssrc: int
    cname: str
    clock_rate: int
    interval: float = DEFAULT_RTCP_INTERVAL
    rng: Callable[[], float] = random.random
    sender: SenderStats = field(init=False)
    sources: dict[int, ReceiverStats] = field(default_factory=dict, init=False)
    next_due: float | None = field(default=None, init=False)
    rtt: float | None = field(default=None, init=False)  # seconds, from peer's reports
    remote_report: ReportBlock | None = field(default=None, init=False)  # peer's view of us
    _last_sr: dict[int, _LastSr] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.sender = SenderStats(self.ssrc, self.clock_rate)

    def _randomised(self, interval: float) -> float:
        # RFC 3550 §6.3.1 (simplified): spread uniformly over [0.5, 1.5] × T.
        return interval * (RANDOM_SPREAD_MIN + self.rng())

    def start(self, now: float) -> None:
        self.next_due = now + self._randomised(self.interval * INITIAL_INTERVAL_FACTOR)

    def is_due(self, now: float) -> bool:
        return self.next_due is not None and now >= self.next_due

    def on_rtp_received(
        self, ssrc: int, seq: int, timestamp: int, now: float, payload_size: int = 0
    ) -> bool:
        stats = self.sources.get(ssrc)
        if stats is None:
            stats = self.sources[ssrc] = ReceiverStats(ssrc, self.clock_rate)
        return stats.update(seq, timestamp, now, payload_size)

    def on_rtp_sent(self, payload_size: int, timestamp: int, now: float) -> None:
        self.sender.on_sent(payload_size, timestamp, now)

    def on_rtcp(
        self, packets: Iterable[RtcpPacket], now: float, wall_time: float | None = None
    ) -> list[int]:
        """Absorb received RTCP; returns SSRCs that sent BYE (their stats are dropped)."""
        wall = now if wall_time is None else wall_time
        byes: list[int] = []
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                self._last_sr[packet.ssrc] = _LastSr(ntp_middle32(packet.ntp_timestamp), now)
                self._absorb_blocks(packet.reports, wall)
            elif isinstance(packet, RtcpReceiverReport):
                self._absorb_blocks(packet.reports, wall)
            elif isinstance(packet, RtcpBye):
                for ssrc in packet.ssrcs:
                    self.sources.pop(ssrc, None)
                    self._last_sr.pop(ssrc, None)
                    byes.append(ssrc)
        return byes

    def _absorb_blocks(self, blocks: list[ReportBlock], wall: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self.remote_report = block
            rtt = round_trip_time(ntp_from_unix(wall), block.lsr, block.dlsr)
            if rtt is not None:
                self.rtt = rtt

    def _report_blocks(self, now: float) -> list[ReportBlock]:
        blocks = []
        for stats in self.sources.values():
            # RFC 3550 §6.4: report sources heard since the last report.
            if not (stats.valid and stats.heard_since_report):
                continue
            last = self._last_sr.get(stats.ssrc)
            lsr = dlsr = 0
            if last is not None:
                lsr = last.lsr
                dlsr = ntp_short_from_seconds(now - last.arrival)
            blocks.append(stats.report_block(lsr, dlsr))
            if len(blocks) == MAX_REPORT_BLOCKS:
                break
        return blocks

    def build_packets(self, now: float, wall_time: float | None = None) -> list[RtcpPacket]:
        """SR (if we sent since the last report) or RR, plus SDES CNAME (§6.1)."""
        wall = now if wall_time is None else wall_time
        blocks = self._report_blocks(now)
        sender = self.sender
        head: RtcpPacket
        if sender.sent_since_report:
            head = RtcpSenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=ntp_from_unix(wall),
                rtp_timestamp=sender.rtp_timestamp_at(now),
                packet_count=sender.packet_count,
                octet_count=sender.octet_count,
                reports=blocks,
            )
            sender.sent_since_report = False
        else:
            head = RtcpReceiverReport(ssrc=self.ssrc, reports=blocks)
        sdes = RtcpSdes([SdesChunk(self.ssrc, [(SDES_CNAME, self.cname.encode())])])
        return [head, sdes]

    def build_report(self, now: float, wall_time: float | None = None) -> bytes:
        """Build the report and schedule the next one."""
        packets = self.build_packets(now, wall_time)
        self.next_due = now + self._randomised(self.interval)
        return serialize_compound(packets)

    def build_bye(self, now: float, wall_time: float | None = None, reason: str | None = None) -> bytes:
        """Final compound report ending in BYE (RFC 3550 §6.6); stops scheduling."""
        packets = self.build_packets(now, wall_time)
        packets.append(RtcpBye([self.ssrc], reason.encode() if reason is not None else None))
        self.next_due = None
        return serialize_compound(packets)
