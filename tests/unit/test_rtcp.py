import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtp.packet import RtpError
from callbridge.rtp.rtcp import (
    NTP_EPOCH_OFFSET,
    SDES_CNAME,
    ReportBlock,
    RtcpBye,
    RtcpError,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    SdesChunk,
    ntp_from_unix,
    ntp_middle32,
    ntp_short_from_seconds,
    parse_compound,
    round_trip_time,
    seconds_from_ntp_short,
    serialize_compound,
    unix_from_ntp,
)

BLOCK = struct.pack("!IIIIII", 0xAABBCCDD, (64 << 24) | 5, 0x0001_0010, 42, 0x12345678, 0x00018000)


def test_report_block_layout():
    b = ReportBlock.parse(BLOCK)
    assert b == ReportBlock(0xAABBCCDD, 64, 5, 0x10010, 42, 0x12345678, 0x18000)
    assert b.serialize() == BLOCK


def test_report_block_negative_cumulative_lost():
    data = struct.pack("!IIIIII", 1, 0x00FFFFFE, 0, 0, 0, 0)
    b = ReportBlock.parse(data)
    assert b.cumulative_lost == -2
    assert b.serialize() == data


def test_report_block_clamps_cumulative_lost():
    def roundtrip(lost):
        return ReportBlock.parse(ReportBlock(1, cumulative_lost=lost).serialize()).cumulative_lost

    assert roundtrip(1 << 30) == 0x7FFFFF
    assert roundtrip(-(1 << 30)) == -0x800000


def test_sender_report_layout():
    ntp = 0xE1234567_80000000
    data = struct.pack("!BBH", 0x81, 200, 12) + struct.pack("!IQIII", 0x01020304, ntp, 8000, 50, 8000) + BLOCK
    (sr,) = parse_compound(data)
    assert isinstance(sr, RtcpSenderReport)
    assert sr.ssrc == 0x01020304
    assert sr.ntp_timestamp == ntp
    assert sr.rtp_timestamp == 8000
    assert sr.packet_count == 50 and sr.octet_count == 8000
    assert sr.reports == [ReportBlock.parse(BLOCK)]
    assert sr.serialize() == data


def test_receiver_report_layout_and_empty():
    data = struct.pack("!BBH", 0x81, 201, 7) + struct.pack("!I", 9) + BLOCK
    (rr,) = parse_compound(data)
    assert rr == RtcpReceiverReport(9, [ReportBlock.parse(BLOCK)])
    assert rr.serialize() == data
    empty = RtcpReceiverReport(9).serialize()
    assert empty == b"\x80\xc9\x00\x01\x00\x00\x00\x09"


def test_sdes_cname_layout():
    # chunk: ssrc, CNAME "abc" (2+3 = 5 octets) -> 9 octets, pad to 12 with nulls
    data = struct.pack("!BBH", 0x81, 202, 3) + struct.pack("!I", 5) + b"\x01\x03abc\x00\x00\x00"
    (sdes,) = parse_compound(data)
    assert sdes == RtcpSdes([SdesChunk(5, [(SDES_CNAME, b"abc")])])
    assert sdes.chunks[0].cname == "abc"
    assert sdes.serialize() == data


def test_sdes_item_ending_on_word_boundary_gets_full_null_word():
    chunk = SdesChunk(1, [(SDES_CNAME, b"ab")])  # 4 + 4 octets -> needs 4 more nulls
    assert chunk.serialize() == b"\x00\x00\x00\x01\x01\x02ab\x00\x00\x00\x00"
    (parsed,) = parse_compound(RtcpSdes([chunk, SdesChunk(2, [(6, b"tool")])]).serialize())
    assert parsed.chunks[0] == chunk
    assert parsed.chunks[1].items == [(6, b"tool")]
    assert parsed.chunks[1].cname is None


def test_bye_layout():
    data = struct.pack("!BBH", 0x82, 203, 4) + struct.pack("!II", 1, 2) + b"\x04done\x00\x00\x00"
    (bye,) = parse_compound(data)
    assert bye == RtcpBye([1, 2], b"done")
    assert bye.serialize() == data
    assert RtcpBye([3]).serialize() == b"\x81\xcb\x00\x01\x00\x00\x00\x03"


def test_compound_round_trip_with_unknown_type():
    packets = [
        RtcpSenderReport(
            1, ntp_from_unix(1_700_000_000.25), 1234, 10, 1600, [ReportBlock(2, 3, 4, 5, 6, 7, 8)]
        ),
        RtcpSdes([SdesChunk(1, [(SDES_CNAME, b"user@host")])]),
        RtcpUnknown(205, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02"),
        RtcpBye([1], b"bye"),
    ]
    data = serialize_compound(packets)
    assert parse_compound(data) == packets


def test_padding_on_last_packet_is_stripped():
    rr = RtcpReceiverReport(7).serialize()
    padded = bytearray(rr + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    padded[3] += 1  # length grows by one word
    assert parse_compound(bytes(padded)) == [RtcpReceiverReport(7)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",
        b"\x40\xc9\x00\x01\x00\x00\x00\x01",  # version 1
        b"\x80\xc9\x00\x02\x00\x00\x00\x01",  # length overruns
        b"\x81\xc9\x00\x01\x00\x00\x00\x01",  # RC=1 without block
        b"\x80\xc8\x00\x01\x00\x00\x00\x01",  # SR without sender info
        b"\xa0\xc9\x00\x01\x00\x00\x00\x00",  # padding count 0
        b"\xa0\xc9\x00\x01\x00\x00\x00\x09",  # padding larger than packet
        b"\x81\xca\x00\x01\x00\x00\x00\x01",  # SDES chunk with no terminator
        b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x09abcd",  # SDES item overruns
        b"\x82\xcb\x00\x01\x00\x00\x00\x01",  # BYE count 2, one SSRC
        b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc",  # BYE reason overruns
        b"\x80\xc9\x00\x01\x00\x00\x00\x01\x80",  # trailing partial header
    ],
)
def test_malformed_rtcp_raises(data):
    with pytest.raises(RtcpError):
        parse_compound(data)


def test_rtcp_error_is_rtp_error():
    assert issubclass(RtcpError, RtpError) and issubclass(RtcpError, ValueError)


@given(st.binary(max_size=120))
def test_parse_arbitrary_bytes_only_raises_rtcp_error(data):
    try:
        parse_compound(data)
    except RtcpError:
        pass


def test_ntp_conversions():
    assert ntp_from_unix(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_from_unix(1.5) == ((NTP_EPOCH_OFFSET + 1) << 32) | 0x80000000
    assert unix_from_ntp(ntp_from_unix(1_700_000_000.125)) == pytest.approx(1_700_000_000.125, abs=1e-6)
    assert ntp_middle32(0x1122334455667788) == 0x33445566
    assert ntp_short_from_seconds(1.5) == 0x18000
    assert seconds_from_ntp_short(0x18000) == 1.5
    assert ntp_short_from_seconds(-1) == 0


def test_round_trip_time():
    # RFC 3550 §6.4.1 worked example: A=0xb710:8000, LSR=0xb705:2000, DLSR=5.25 s.
    arrival = 0xB710_8000 << 16  # 64-bit NTP whose middle 32 bits are A
    assert ntp_middle32(arrival) == 0xB7108000
    assert round_trip_time(arrival, 0xB7052000, 0x00054000) == pytest.approx(6.125)
    assert round_trip_time(arrival, 0, 0) is None
    assert round_trip_time(arrival, 0xB7108000, 0x10000) == 0.0  # negative -> 0


def test_single_packet_parse_helpers():
    rr = RtcpReceiverReport(3, [ReportBlock(4)])
    assert RtcpReceiverReport.parse(rr.serialize()) == rr
    assert RtcpBye.parse(RtcpBye([1]).serialize()) == RtcpBye([1])
    with pytest.raises(RtcpError):
        RtcpSenderReport.parse(rr.serialize())  # wrong type
    with pytest.raises(RtcpError):
        RtcpReceiverReport.parse(rr.serialize() + RtcpBye([1]).serialize())  # compound
