"""RTCP packets (RFC 3550 §6.4–§6.6) and compound packets (§6.1).

SR, RR, SDES and BYE are decoded; any other packet type (APP, feedback, XR)
is kept as :class:`RtcpUnknown` so a compound packet round-trips.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .packet import RTP_VERSION, RtpError

__all__ = [
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_APP",
    "SDES_CNAME",
    "RtcpError",
    "ReportBlock",
    "RtcpSenderReport",
    "RtcpReceiverReport",
    "SdesChunk",
    "RtcpSdes",
    "RtcpBye",
    "RtcpUnknown",
    "RtcpPacket",
    "parse_compound",
    "serialize_compound",
    "ntp_from_unix",
    "unix_from_ntp",
    "ntp_middle32",
    "ntp_short_from_seconds",
    "seconds_from_ntp_short",
    "round_trip_time",
]

# RFC 3550 §12.1 packet types.
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

# RFC 3550 §12.2 SDES item types.
SDES_END = 0
SDES_CNAME = 1

HEADER_SIZE = 4
REPORT_BLOCK_SIZE = 24
SENDER_INFO_SIZE = 20
MAX_COUNT = 31  # 5-bit RC/SC field
MAX_ITEM_LENGTH = 255
WORD = 4

# RFC 5905 §6: NTP era 0 starts 1900-01-01, 70 years (17 leap days) before Unix.
NTP_EPOCH_OFFSET = 2_208_988_800
NTP_FRACTION = 1 << 32
NTP_SHORT_FRACTION = 1 << 16
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1

# RFC 3550 §6.4.1: cumulative lost is a signed 24-bit field.
CUMULATIVE_LOST_MAX = 0x7FFFFF
CUMULATIVE_LOST_MIN = -0x800000
_U24 = 0xFFFFFF

_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")  # ssrc, ntp, rtp ts, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")


class RtcpError(RtpError):
    """Malformed RTCP data."""


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    # RFC 3550 §6.4.1: length is in 32-bit words minus one, header included.
    if body_len % WORD:
        raise RtcpError("RTCP body must be 32-bit aligned")
    if not 0 <= count <= MAX_COUNT:
        raise RtcpError(f"RTCP count out of range: {count}")
    return _HEADER.pack((RTP_VERSION << 6) | count, packet_type, (HEADER_SIZE + body_len) // WORD - 1)


@dataclass(slots=True)
class ReportBlock:
    """Reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int = 0  # fixed point, lost/expected * 256
    cumulative_lost: int = 0  # signed: duplicates can make it negative
    highest_sequence: int = 0  # extended highest sequence number received
    jitter: int = 0  # timestamp units
    lsr: int = 0  # middle 32 bits of last SR NTP timestamp
    dlsr: int = 0  # delay since last SR, 1/65536 s

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if offset + REPORT_BLOCK_SIZE > len(data):
            raise RtcpError("report block truncated")
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = lost_word & _U24
        if cumulative > CUMULATIVE_LOST_MAX:
            cumulative -= 1 << 24
        return cls(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        cumulative = min(max(self.cumulative_lost, CUMULATIVE_LOST_MIN), CUMULATIVE_LOST_MAX)
        lost_word = ((self.fraction_lost & 0xFF) << 24) | (cumulative & _U24)
        try:
            return _REPORT_BLOCK.pack(
                self.ssrc, lost_word, self.highest_sequence, self.jitter, self.lsr, self.dlsr
            )
        except struct.error as exc:
            raise RtcpError(f"report block field out of range: {exc}") from None


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[list[ReportBlock], int]:
    end = offset + count * REPORT_BLOCK_SIZE
    if end > len(body):
        raise RtcpError("report blocks truncated")
    blocks = [ReportBlock.parse(body, offset + i * REPORT_BLOCK_SIZE) for i in range(count)]
    return blocks, end


def _with_reports(packet_type: int, head: bytes, reports: list[ReportBlock], extension: bytes) -> bytes:
    # SR and RR end the same way: report blocks, then profile extensions (§6.4.1, §6.4.2).
    body = head + b"".join(b.serialize() for b in reports) + extension
    return _header(len(reports), packet_type, len(body)) + body


@dataclass(slots=True)
class RtcpSenderReport:
    """SR (RFC 3550 §6.4.1). ``extension`` is profile-specific trailing data."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = RTCP_SR

    @classmethod
    def parse(cls, data: bytes) -> RtcpSenderReport:
        """Parse a datagram holding exactly one packet of this type."""
        return _parse_single(data, cls)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> RtcpSenderReport:
        if len(body) < SENDER_INFO_SIZE + WORD:
            raise RtcpError("SR too short")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        blocks, end = _parse_blocks(body, SENDER_INFO_SIZE + WORD, count)
        return cls(ssrc, ntp, rtp_ts, packets, octets, blocks, body[end:])

    def serialize(self) -> bytes:
        try:
            info = _SENDER_INFO.pack(
                self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
            )
        except struct.error as exc:
            raise RtcpError(f"SR field out of range: {exc}") from None
        return _with_reports(RTCP_SR, info, self.reports, self.extension)


@dataclass(slots=True)
class RtcpReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = RTCP_RR

    @classmethod
    def parse(cls, data: bytes) -> RtcpReceiverReport:
        """Parse a datagram holding exactly one packet of this type."""
        return _parse_single(data, cls)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> RtcpReceiverReport:
        if len(body) < WORD:
            raise RtcpError("RR too short")
        (ssrc,) = _SSRC.unpack_from(body)
        blocks, end = _parse_blocks(body, WORD, count)
        return cls(ssrc, blocks, body[end:])

    def serialize(self) -> bytes:
        try:
            head = _SSRC.pack(self.ssrc)
        except struct.error as exc:
            raise RtcpError(f"RR SSRC out of range: {exc}") from None
        return _with_reports(RTCP_RR, head, self.reports, self.extension)


@dataclass(slots=True)
class SdesChunk:
    """One SSRC/CSRC chunk: list of (item type, value) pairs (RFC 3550 §6.5)."""

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def serialize(self) -> bytes:
        parts = [_SSRC.pack(self.ssrc)]
        for kind, value in self.items:
            if not 0 < kind <= 0xFF or len(value) > MAX_ITEM_LENGTH:
                raise RtcpError(f"bad SDES item type {kind} or length {len(value)}")
            parts.append(bytes((kind, len(value))))
            parts.append(value)
        raw = b"".join(parts)
        # RFC 3550 §6.5: list ends with at least one null octet, then pad to a word.
        return raw + bytes(WORD - len(raw) % WORD)


@dataclass(slots=True)
class RtcpSdes:
    """SDES (RFC 3550 §6.5)."""

    chunks: list[SdesChunk] = field(default_factory=list)

    packet_type = RTCP_SDES

    @classmethod
    def parse(cls, data: bytes) -> RtcpSdes:
        """Parse a datagram holding exactly one packet of this type."""
        return _parse_single(data, cls)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> RtcpSdes:
        chunks = []
        offset = 0
        end = len(body)
        for _ in range(count):
            if offset + WORD > end:
                raise RtcpError("SDES chunk truncated")
            (ssrc,) = _SSRC.unpack_from(body, offset)
            offset += WORD
            items = []
            while True:
                if offset >= end:
                    raise RtcpError("SDES item list not terminated")
                kind = body[offset]
                if kind == SDES_END:
                    # Skip the null terminator and pad to the next word boundary.
                    offset = (offset // WORD + 1) * WORD
                    if offset > end:
                        raise RtcpError("SDES chunk padding truncated")
                    break
                if offset + 2 > end:
                    raise RtcpError("SDES item truncated")
                value_end = offset + 2 + body[offset + 1]
                if value_end > end:
                    raise RtcpError("SDES item overruns packet")
                items.append((kind, body[offset + 2 : value_end]))
                offset = value_end
            chunks.append(SdesChunk(ssrc, items))
        return cls(chunks)

    def serialize(self) -> bytes:
        body = b"".join(c.serialize() for c in self.chunks)
        return _header(len(self.chunks), RTCP_SDES, len(body)) + body


@dataclass(slots=True)
class RtcpBye:
    """BYE (RFC 3550 §6.6)."""

    ssrcs: list[int] = field(default_factory=list)
    reason: bytes | None = None

    packet_type = RTCP_BYE

    @classmethod
    def parse(cls, data: bytes) -> RtcpBye:
        """Parse a datagram holding exactly one packet of this type."""
        return _parse_single(data, cls)

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> RtcpBye:
        end = count * WORD
        if end > len(body):
            raise RtcpError("BYE SSRC list truncated")
        ssrcs = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        if end < len(body):
            reason_end = end + 1 + body[end]
            if reason_end > len(body):
                raise RtcpError("BYE reason overruns packet")
            reason = body[end + 1 : reason_end]
        return cls(ssrcs, reason)

    def serialize(self) -> bytes:
        try:
            body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        except struct.error as exc:
            raise RtcpError(f"BYE SSRC out of range: {exc}") from None
        if self.reason is not None:
            if len(self.reason) > MAX_ITEM_LENGTH:
                raise RtcpError("BYE reason too long")
            body += bytes((len(self.reason),)) + self.reason
            body += bytes(-len(body) % WORD)
        return _header(len(self.ssrcs), RTCP_BYE, len(body)) + body


@dataclass(slots=True)
class RtcpUnknown:
    """Any other RTCP packet type, kept verbatim (body without header/padding)."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye | RtcpUnknown

_DECODERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    RTCP_SR: RtcpSenderReport._from_body,
    RTCP_RR: RtcpReceiverReport._from_body,
    RTCP_SDES: RtcpSdes._from_body,
    RTCP_BYE: RtcpBye._from_body,
}


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a (possibly compound) RTCP packet; raise :class:`RtcpError`.

    Validity checks follow RFC 3550 §A.2 except that a leading SR/RR is not
    required, to accept reduced-size RTCP (RFC 5506).
    """
    data = bytes(data)
    packets: list[RtcpPacket] = []
    offset = 0
    total = len(data)
    if total < HEADER_SIZE:
        raise RtcpError("RTCP packet too short")
    while offset < total:
        if offset + HEADER_SIZE > total:
            raise RtcpError("RTCP header truncated")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RtcpError(f"bad RTCP version {b0 >> 6}")
        end = offset + (words + 1) * WORD
        if end > total:
            raise RtcpError("RTCP length overruns datagram")
        body_end = end
        if b0 & 0x20:
            # RFC 3550 §6.4.1: padding count in the last octet of this packet.
            pad = data[end - 1]
            if pad == 0 or pad > end - offset - HEADER_SIZE:
                raise RtcpError("bogus RTCP padding")
            body_end -= pad
        body = data[offset + HEADER_SIZE : body_end]
        count = b0 & 0x1F
        decoder = _DECODERS.get(packet_type)
        if decoder is None:
            packets.append(RtcpUnknown(packet_type, count, body))
        else:
            packets.append(decoder(count, body))
        offset = end
    return packets


def _parse_single[T](data: bytes, cls: type[T]) -> T:
    packets = parse_compound(data)
    if len(packets) != 1 or not isinstance(packets[0], cls):
        raise RtcpError(f"expected a single {cls.__name__}")
    return packets[0]


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound RTCP datagram (RFC 3550 §6.1)."""
    return b"".join(p.serialize() for p in packets)


# --- NTP timestamps (RFC 3550 §4) -------------------------------------------


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp for a Unix wall-clock time in seconds."""
    seconds = unix_time + NTP_EPOCH_OFFSET
    whole = int(seconds)
    frac = int((seconds - whole) * NTP_FRACTION)
    return ((whole << 32) | min(frac, _U32)) & _U64


def unix_from_ntp(ntp: int) -> float:
    """Unix time in seconds for a 64-bit NTP timestamp (era 0)."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & _U32) / NTP_FRACTION


def ntp_middle32(ntp: int) -> int:
    """Middle 32 bits of an NTP timestamp, as used for LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & _U32


def ntp_short_from_seconds(seconds: float) -> int:
    """Seconds to 16.16 fixed point (DLSR), clamped to 32 bits."""
    return min(max(int(seconds * NTP_SHORT_FRACTION), 0), _U32)


def seconds_from_ntp_short(value: int) -> float:
    return value / NTP_SHORT_FRACTION


def round_trip_time(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """RTT in seconds from a report block (RFC 3550 §6.4.1, A - LSR - DLSR).

    ``arrival_ntp`` is the full 64-bit NTP time the report arrived. Returns
    ``None`` if the block carries no SR reference (LSR 0).
    """
    if lsr == 0:
        return None
    rtt = (ntp_middle32(arrival_ntp) - lsr - dlsr) & _U32
    if rtt & 0x80000000:  # negative: clock skew or bogus values
        return 0.0
    return rtt / NTP_SHORT_FRACTION
