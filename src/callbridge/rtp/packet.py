"""RTP data packet parse/serialize (RFC 3550 §5.1).

Hot path: one ``struct.unpack_from`` for the fixed header and a fast path for
the common case (V=2, no padding, no extension, no CSRC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTP_VERSION",
    "RTP_HEADER_SIZE",
    "RtpError",
    "RtpPacket",
    "is_rtcp",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12  # RFC 3550 §5.1: fixed part of the header
MAX_CSRC_COUNT = 15  # 4-bit CC field
EXTENSION_HEADER_SIZE = 4  # RFC 3550 §5.3.1: profile (16) + length in words (16)
MAX_PAYLOAD_TYPE = 0x7F
MAX_PADDING = 0xFF  # pad count lives in one octet

# RFC 5761 §4: with RTP/RTCP mux, a second octet of 192..223 (RTCP PT 192..223,
# i.e. marker bit + RTP PT 64..95) identifies RTCP.
RTCP_SECOND_OCTET_MIN = 192
RTCP_SECOND_OCTET_MAX = 223

_VERSION_SHIFT = 6
_PADDING_BIT = 0x20
_EXTENSION_BIT = 0x10
_CC_MASK = 0x0F
_MARKER_BIT = 0x80
_PT_MASK = 0x7F
# First octet of the common case: V=2, P=0, X=0, CC=0.
_PLAIN_FIRST_OCTET = RTP_VERSION << _VERSION_SHIFT

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """Malformed or unsupported RTP data."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet.

    ``padding`` is the number of padding octets (including the count octet)
    stripped on parse / appended on serialize; 0 means none.
    ``extension_profile`` is ``None`` when there is no header extension;
    ``extension_data`` is its body (a multiple of 4 octets).
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes, *, keep_extension: bool = True) -> RtpPacket:
        """Parse one RTP packet; raise :class:`RtpError` if it is malformed."""
        if type(data) is not bytes:
            data = bytes(data)
        length = len(data)
        if length < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({length} octets)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)

        if b0 == _PLAIN_FIRST_OCTET:
            # Fast path: nothing variable in the header.
            return cls(b1 & _PT_MASK, seq, ts, ssrc, data[RTP_HEADER_SIZE:], b1 >= _MARKER_BIT)

        if b0 >> _VERSION_SHIFT != RTP_VERSION:
            raise RtpError(f"bad RTP version {b0 >> _VERSION_SHIFT}")

        end = length
        padding = 0
        if b0 & _PADDING_BIT:
            # RFC 3550 §5.1: last octet counts padding octets, itself included.
            padding = data[-1]
            if padding == 0:
                raise RtpError("RTP padding count is zero")
            end -= padding

        offset = RTP_HEADER_SIZE
        cc = b0 & _CC_MASK
        csrcs: tuple[int, ...] = ()
        if cc:
            csrc_end = offset + 4 * cc
            if csrc_end > end:
                raise RtpError("RTP CSRC list truncated")
            csrcs = struct.unpack_from(f"!{cc}I", data, offset)
            offset = csrc_end

        ext_profile: int | None = None
        ext_data = b""
        if b0 & _EXTENSION_BIT:
            if offset + EXTENSION_HEADER_SIZE > end:
                raise RtpError("RTP header extension truncated")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            ext_start = offset + EXTENSION_HEADER_SIZE
            offset = ext_start + 4 * words
            if offset > end:
                raise RtpError("RTP header extension overruns packet")
            if keep_extension:
                ext_profile = profile
                ext_data = data[ext_start:offset]

        if offset > end:
            # Padding claims octets belonging to the header.
            raise RtpError("RTP padding overruns header")
        return cls(
            b1 & _PT_MASK,
            seq,
            ts,
            ssrc,
            data[offset:end],
            b1 >= _MARKER_BIT,
            csrcs,
            ext_profile,
            ext_data,
            padding,
        )

    def serialize(self) -> bytes:
        """Encode to wire format; raise :class:`RtpError` on out-of-range fields."""
        csrcs = self.csrcs
        cc = len(csrcs)
        if cc > MAX_CSRC_COUNT:
            raise RtpError(f"too many CSRCs ({cc})")
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise RtpError(f"payload type out of range: {self.payload_type}")
        b0 = _PLAIN_FIRST_OCTET | cc
        b1 = self.payload_type | (_MARKER_BIT if self.marker else 0)
        padding = self.padding
        if padding:
            if not 0 < padding <= MAX_PADDING:
                raise RtpError(f"padding out of range: {padding}")
            b0 |= _PADDING_BIT
        if self.extension_profile is not None:
            b0 |= _EXTENSION_BIT
        try:
            out = _HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)
            if not (cc or self.extension_profile is not None or padding):
                return out + self.payload
            parts = [out]
            if cc:
                parts.append(struct.pack(f"!{cc}I", *csrcs))
            if self.extension_profile is not None:
                ext = self.extension_data
                if len(ext) % 4:
                    raise RtpError("RTP extension data must be a multiple of 4 octets")
                parts.append(_EXT_HEADER.pack(self.extension_profile, len(ext) // 4))
                parts.append(ext)
        except struct.error as exc:
            raise RtpError(f"RTP field out of range: {exc}") from None
        parts.append(self.payload)
        if padding:
            # RFC 3550 §5.1: zero fill, count in the final octet.
            parts.append(bytes(padding - 1) + bytes((padding,)))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """Demultiplex RTP vs RTCP on a shared port (RFC 5761 §4)."""
    return len(data) >= 2 and RTCP_SECOND_OCTET_MIN <= data[1] <= RTCP_SECOND_OCTET_MAX
