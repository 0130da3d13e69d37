import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.rtp.packet import RtpError, RtpPacket, is_rtcp


def header(b0: int, b1: int, seq: int = 1, ts: int = 160, ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


def test_parse_minimal_packet():
    data = header(0x80, 0x00, seq=0xBEEF, ts=0xDEADBEEF) + b"\xff" * 160
    p = RtpPacket.parse(data)
    assert p.payload_type == 0
    assert p.marker is False
    assert p.sequence == 0xBEEF
    assert p.timestamp == 0xDEADBEEF
    assert p.ssrc == 0x11223344
    assert p.payload == b"\xff" * 160
    assert p.csrcs == ()
    assert p.extension_profile is None
    assert p.padding == 0
    assert p.serialize() == data


def test_marker_and_payload_type():
    p = RtpPacket.parse(header(0x80, 0x80 | 111) + b"abc")
    assert p.marker is True
    assert p.payload_type == 111


def test_serialize_known_layout():
    p = RtpPacket(
        payload_type=8, sequence=7, timestamp=1120, ssrc=0xCAFEBABE, payload=b"\xd5\xd5", marker=True
    )
    assert p.serialize() == b"\x80\x88\x00\x07\x00\x00\x04\x60\xca\xfe\xba\xbe\xd5\xd5"


def test_header_only_packet_has_empty_payload():
    assert RtpPacket.parse(header(0x80, 0)).payload == b""


def test_csrc_list():
    data = header(0x82, 0) + struct.pack("!II", 1, 2) + b"pay"
    p = RtpPacket.parse(data)
    assert p.csrcs == (1, 2)
    assert p.payload == b"pay"
    assert p.serialize() == data


def test_padding_is_stripped_and_reapplied():
    data = header(0xA0, 0) + b"audio" + b"\x00\x00\x03"
    p = RtpPacket.parse(data)
    assert p.payload == b"audio"
    assert p.padding == 3
    assert p.serialize() == data


def test_padding_covering_whole_payload():
    p = RtpPacket.parse(header(0xA0, 0) + b"\x00\x00\x00\x04")
    assert p.payload == b""


def test_extension_is_skipped_and_kept():
    ext = struct.pack("!HH", 0xBEDE, 2) + b"\x10\xaa\x00\x00" + b"\x22\x01\x02\x03"
    data = header(0x90, 0) + ext + b"payload"
    p = RtpPacket.parse(data)
    assert p.extension_profile == 0xBEDE
    assert p.extension_data == ext[4:]
    assert p.payload == b"payload"
    assert p.serialize() == data

    lean = RtpPacket.parse(data, keep_extension=False)
    assert lean.extension_profile is None
    assert lean.payload == b"payload"


def test_everything_together():
    csrc = struct.pack("!III", 7, 8, 9)
    ext = struct.pack("!HH", 0x1000, 1) + b"\x01\x02\x03\x04"
    data = header(0xB3, 0x80 | 96) + csrc + ext + b"xyz" + b"\x00\x02"
    p = RtpPacket.parse(data)
    assert p.csrcs == (7, 8, 9)
    assert p.extension_profile == 0x1000
    assert p.extension_data == b"\x01\x02\x03\x04"
    assert p.payload == b"xyz"
    assert p.padding == 2
    assert p.marker and p.payload_type == 96
    assert p.serialize() == data


def test_empty_extension():
    data = header(0x90, 0) + struct.pack("!HH", 0xBEDE, 0) + b"p"
    p = RtpPacket.parse(data)
    assert p.extension_profile == 0xBEDE and p.extension_data == b""
    assert p.serialize() == data


def test_accepts_bytearray_and_memoryview():
    data = header(0x80, 0) + b"x"
    assert RtpPacket.parse(bytearray(data)).payload == b"x"
    assert RtpPacket.parse(memoryview(data)).payload == b"x"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        header(0x80, 0)[:11],
        header(0x40, 0) + b"x",  # version 1
        header(0x00, 0) + b"x",  # version 0
        header(0xC0, 0) + b"x",  # version 3
        header(0x81, 0),  # CSRC count 1, no CSRC
        header(0x8F, 0) + b"\x00" * 56,  # 15 CSRCs need 60 octets
        header(0x90, 0) + b"\xbe\xde",  # extension header truncated
        header(0x90, 0) + struct.pack("!HH", 0xBEDE, 2) + b"\x00" * 4,  # ext body truncated
        header(0xA0, 0) + b"ab\x00",  # padding count zero
        header(0xA0, 0) + b"ab\x05",  # padding longer than payload
        header(0xA0, 0) + b"\xff",  # padding eats the header
        header(0xB0, 0) + struct.pack("!HH", 0xBEDE, 1) + b"\x00\x00\x00\x06",  # pad into ext
        header(0xA1, 0) + b"\x00\x00\x00\x03",  # padding overlaps CSRC
    ],
)
def test_malformed_packets_raise(data):
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_rtp_error_is_value_error():
    assert issubclass(RtpError, ValueError)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(0, 1 << 16, 0, 0),
        RtpPacket(0, 0, 1 << 32, 0),
        RtpPacket(0, 0, 0, -1),
        RtpPacket(0, 0, 0, 0, csrcs=tuple(range(16))),
        RtpPacket(0, 0, 0, 0, padding=256),
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension_data=b"abc"),
        RtpPacket(0, 0, 0, 0, extension_profile=1 << 16),
    ],
)
def test_serialize_rejects_out_of_range(packet):
    with pytest.raises(RtpError):
        packet.serialize()


def test_is_rtcp_demux():
    assert is_rtcp(b"\x80\xc8\x00\x06")  # SR, PT 200
    assert is_rtcp(b"\x81\xc9\x00\x07")  # RR, PT 201
    assert not is_rtcp(header(0x80, 0))  # PCMU
    assert not is_rtcp(header(0x80, 0x80 | 111))  # opus with marker: 239
    assert not is_rtcp(header(0x80, 96))
    assert not is_rtcp(b"\x80")


@given(st.binary(max_size=200))
@settings(max_examples=2000)
def test_parse_arbitrary_bytes_only_raises_rtp_error(data):
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    # Anything accepted must re-serialize to the same bytes, apart from
    # padding fill which we always write as zeros.
    out = p.serialize()
    assert len(out) == len(data)
    assert out[: len(out) - p.padding] == data[: len(data) - p.padding]


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    ext=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12))),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_roundtrip(pt, seq, ts, ssrc, marker, csrcs, ext, payload, padding):
    profile, ext_data = (None, b"") if ext is None else (ext[0], ext[1] + bytes(-len(ext[1]) % 4))
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrcs, profile, ext_data, padding)
    assert RtpPacket.parse(p.serialize()) == p
