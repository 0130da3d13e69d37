"""Fuzz targets: each turns bytes into calls on one module and checks its contract.

A target's check function takes one input and returns normally when the module
behaved: it either accepted the input or refused it with its documented error
type (``SipParseError``, ``SdpError``, ``RtpError``, ``EventStreamError``,
``SourceError``...). Any other exception escaping the check (IndexError,
KeyError, TypeError, RecursionError, a failed round-trip assertion...) is a
crash, and so is an input that takes longer than the target's ``slow_seconds``
of CPU time.

This module imports no callbridge code at import time: ``build`` does, so the
atheris entry point (``tests/fuzz/atheris_main.py``) can import the modules
under test inside ``atheris.instrument_imports`` and get their coverage. The
checks need nothing from atheris, so the smoke test also replays the corpus
through them in-process.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"
DICTS_DIR = Path(__file__).parent / "dicts"


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    build: Callable[[], Callable[[bytes], None]]
    instrument: tuple[str, ...] = ("callbridge",)  # packages whose coverage guides the fuzzer
    max_len: int = 4096  # libFuzzer -max_len: a datagram-sized input covers every code path here
    slow_seconds: float = 0.25  # CPU seconds for one input before it counts as a crash
    dictionary: str | None = None  # tests/fuzz/dicts/<name>: tokens libFuzzer splices in (-dict)

    @property
    def corpus(self) -> Path:
        return CORPUS_DIR / self.name

    @property
    def dictionary_path(self) -> Path | None:
        return DICTS_DIR / self.dictionary if self.dictionary else None


class Reader:
    """Pull structured values off the front of a fuzz input (never fails: runs out as zeros)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self, size: int) -> int:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return int.from_bytes(chunk.ljust(size, b"\0"), "big")

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    @property
    def left(self) -> int:
        return max(0, len(self.data) - self.pos)


# ---------------------------------------------------------------- SIP


def _sip_parser() -> Callable[[bytes], None]:
    from callbridge.sip.errors import SipParseError
    from callbridge.sip.framing import FramingError, StreamFramer
    from callbridge.sip.message import Request, make_response
    from callbridge.sip.parser import PartialRequest, parse_message

    accessors = ("call_id", "max_forwards", "expires", "cseq", "from_addr", "to_addr",
                 "vias", "top_via", "contacts", "record_routes", "content_type")

    def key(message):
        start = (message.method, message.uri) if isinstance(message, Request) else (message.status, message.reason)
        headers = [(name, value) for name, value in message.headers if name != "Content-Length"]
        return type(message).__name__, start, headers, message.body

    def parse(data: bytes, stream: bool) -> None:
        try:
            message = parse_message(data, stream=stream)
        except PartialRequest as exc:
            if exc.respondable:
                make_response(exc.partial, exc.status).serialize()  # the 400 the transport sends
            return
        except SipParseError:
            return
        for name in accessors:  # parsed on use: each may refuse, only with SipParseError
            try:
                getattr(message, name)
            except SipParseError:
                pass
        # Round trip: what we serialise parses back to the same message.
        wire = message.serialize()
        again = parse_message(wire, stream=True)
        assert key(again) == key(message), (key(message), key(again))

    def frame(data: bytes, cut: int) -> tuple[list[bytes], str | None]:
        """Messages framed from ``data`` fed in two pieces, and the error that ended the stream."""
        framer = StreamFramer()
        out: list[bytes] = []
        try:
            for piece in (data[:cut], data[cut:]):
                out += framer.feed(piece)
        except FramingError as exc:
            return out + exc.messages, exc.reason
        return out, None

    def check(data: bytes) -> None:
        parse(data, stream=False)
        parse(data, stream=True)
        # TCP framing must not depend on how the bytes were chunked.
        whole = frame(data, len(data))
        if data:
            split = frame(data, data[0] % len(data))
            assert split == whole, (whole, split)
        for message in whole[0][:4]:
            parse(message, stream=True)

    return check


def _sip_uri() -> Callable[[bytes], None]:
    from callbridge.sip.address import address_for_uri
    from callbridge.sip.errors import SipParseError
    from callbridge.sip.uri import SipUri, parse_name_addr, parse_name_addr_list, parse_uri, parse_via_list

    def check(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        try:
            uri = parse_uri(text)
        except SipParseError:
            pass
        else:
            assert parse_uri(str(uri)) == uri, (text, str(uri))
            if isinstance(uri, SipUri):
                uri.user_decoded
                address_for_uri(uri)
        try:
            address = parse_name_addr(text)
        except SipParseError:
            pass
        else:
            assert parse_name_addr(str(address)) == address, (text, str(address))
        try:
            vias = parse_via_list(text)
        except SipParseError:
            pass
        else:
            for via in vias:
                via.has_magic_cookie
            assert parse_via_list(", ".join(str(v) for v in vias)) == vias, (text, vias)
        try:
            parse_name_addr_list(text)
        except SipParseError:
            pass

    return check


# ---------------------------------------------------------------- SDP


def _sdp() -> Callable[[bytes], None]:
    from callbridge.sip.sdp import SdpError, apply_answer, build_offer, is_hold, negotiate_answer, parse_sdp

    offer = build_offer("192.0.2.1", 40000, [("PCMU", 0, 8000), ("G722", 9, 8000)],
                        session_id=1, session_version=1, comfort_noise=True)

    def grammatical(body: bytes) -> None:
        # RFC 4566 §9: a line's text is a byte-string: no NUL, CR or LF inside it.
        lines = body.split(b"\r\n")
        assert lines[-1] == b"", body
        for line in lines[:-1]:
            assert not any(c in line for c in b"\0\r\n"), line

    def check(data: bytes) -> None:
        try:
            sdp = parse_sdp(data)
        except SdpError:
            return
        body = sdp.encode()
        assert parse_sdp(body) == sdp, body
        is_hold(sdp)
        for prefer in ("local", "offer"):
            try:
                answer = negotiate_answer(sdp, local_address="192.0.2.1", local_port=40000,
                                          codec_preference=["G722", "PCMU", "PCMA"], session_id=7,
                                          session_version=7, prefer=prefer, comfort_noise=True)
            except SdpError:  # NotAcceptable (488) is one
                continue
            ours = answer.sdp.encode()
            grammatical(ours)
            assert parse_sdp(ours) == answer.sdp, ours
        try:
            apply_answer(offer, sdp)
        except SdpError:
            pass

    return check


# ---------------------------------------------------------------- RTP / RTCP


def _rtp() -> Callable[[bytes], None]:
    from callbridge.rtp.packet import RtpError, RtpPacket, is_rtcp

    def check(data: bytes) -> None:
        is_rtcp(data)
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        bare = RtpPacket.parse(data, keep_extension=False)
        assert bare.payload == packet.payload and bare.extension_profile is None
        assert RtpPacket.parse(packet.serialize()) == packet
        assert RtpPacket.parse(bytearray(data)) == packet

    return check


def _rtcp() -> Callable[[bytes], None]:
    from callbridge.rtp.latch import rtcp_sender_ssrc
    from callbridge.rtp.rtcp import RtcpError, parse_compound, serialize_compound
    from callbridge.rtp.stats import RtcpScheduler

    def check(data: bytes) -> None:
        rtcp_sender_ssrc(data)
        try:
            packets = parse_compound(data)
        except RtcpError:
            return
        try:
            wire = serialize_compound(packets)
        except RtcpError:
            pass  # a body left unaligned by stripped padding cannot be re-framed as it was
        else:
            assert parse_compound(wire) == packets, (data, wire)
        scheduler = RtcpScheduler(ssrc=0x11223344, cname="fuzz", clock_rate=8000, rng=lambda: 0.5)
        for ssrc in {getattr(p, "ssrc", 0) for p in packets}:
            scheduler.on_rtp_received(ssrc, 1, 160, 0.0, 160)
        scheduler.on_rtcp(packets, 1.0, 1_700_000_000.0)
        scheduler.build_packets(2.0, 1_700_000_001.0)

    return check


# ---------------------------------------------------------------- RFC 4733


def _rfc4733() -> Callable[[bytes], None]:
    from callbridge.media.dtmf.rfc4733 import (
        DTMF_DIGITS,
        VOLUME_MASK,
        DtmfDigit,
        Rfc4733Receiver,
        TelephoneEvent,
        digit_packets,
        dial_string_packets,
    )

    clocks = (8000, 16000, 48000)
    dial_alphabet = "0123456789*#ABCDabcdw -x"  # "x" is not dialable: ValueError

    def feed_all(receiver: Rfc4733Receiver, packets, ssrc: int = 7) -> list[DtmfDigit]:
        out: list[DtmfDigit] = []
        for packet in sorted(packets, key=lambda p: p.send_offset):
            out += receiver.feed(packet.timestamp, packet.marker, packet.payload, ssrc)
        return out + receiver.flush()

    def wire(reader: Reader) -> None:
        # Arbitrary packets: 8 bytes each = timestamp step, flags, SSRC pick, 4 payload bytes.
        receiver = Rfc4733Receiver(clocks[reader.uint(1) % 3], "start" if reader.uint(1) & 1 else "end")
        timestamp = reader.uint(4)
        feeds = 0
        out: list[DtmfDigit] = []
        while reader.left >= 4:
            step = reader.uint(2)
            timestamp += step - 0x8000 if step & 0x8000 else step
            flags = reader.uint(1)
            ssrc = None if flags & 4 else reader.uint(1) & 3
            payload = reader.data[reader.pos : reader.pos + (3 if flags & 2 else 4)]
            reader.pos += len(payload)
            event = TelephoneEvent.parse(payload)
            if event is not None:
                assert TelephoneEvent.parse(event.pack()) == event
            out += receiver.feed(timestamp, bool(flags & 1), payload, ssrc)
            feeds += 1
        out += receiver.flush()
        assert len(out) <= 2 * feeds + 1, (feeds, out)
        for digit in out:
            assert digit.digit in DTMF_DIGITS and 0 <= digit.volume <= VOLUME_MASK, digit
            assert digit.duration is None or digit.duration >= 0, digit

    def one_digit(reader: Reader) -> None:
        # What our sender emits, our receiver reads back as exactly that key press.
        digit = DTMF_DIGITS[reader.uint(1) % 16]
        clock = clocks[reader.uint(1) % 3]
        duration_ms = 40 + reader.uint(2) % 3000  # up to 3 s: three 16-bit segments at 48 kHz
        interval_ms = 10 + 10 * (reader.uint(1) % 6)
        volume = reader.uint(1) % (VOLUME_MASK + 1)
        start = reader.uint(4)
        packets = digit_packets(digit, start, clock, duration_ms, interval_ms, volume)
        total = round(duration_ms * clock / 1000)
        got = feed_all(Rfc4733Receiver(clock, "end"), packets)
        assert got == [DtmfDigit(digit, start, volume, total, clock)], (digit, duration_ms, clock, got)
        got = feed_all(Rfc4733Receiver(clock, "start"), packets)
        # Reported on its first packet, without a length; unless that packet already ended it.
        first_ends = TelephoneEvent.parse(packets[0].payload).end
        assert got == [DtmfDigit(digit, start, volume, total if first_ends else None, clock)], got

    def dial(reader: Reader) -> None:
        clock = clocks[reader.uint(1) % 3]
        start = reader.uint(4)
        text = "".join(dial_alphabet[b % len(dial_alphabet)] for b in reader.rest()[:24])
        try:
            packets = dial_string_packets(text, start, clock)
        except ValueError:
            assert "x" in text, text
            return
        expected = "".join(c for c in text.upper() if c in DTMF_DIGITS)
        got = feed_all(Rfc4733Receiver(clock, "end"), packets)
        assert "".join(d.digit for d in got) == expected, (text, got)

    modes = (wire, one_digit, dial)

    def check(data: bytes) -> None:
        reader = Reader(data)
        modes[reader.uint(1) % len(modes)](reader)

    return check


# ---------------------------------------------------------------- AWS event stream


def _frame(headers: bytes, payload: bytes) -> bytes:
    """A message with correct lengths and CRCs around arbitrary header bytes, so the
    fuzzer reaches the header decoder instead of dying on CRC32 (which it cannot solve)."""
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _eventstream() -> Callable[[bytes], None]:
    from callbridge.standins.eventstream import Decoder, EventStreamError, decode, decode_headers, encode

    def decoded_round_trip(wire: bytes) -> None:
        try:
            message = decode(wire)
        except EventStreamError:
            return
        assert decode(encode(message)) == message, wire

    def stream(reader: Reader) -> None:
        # Several framed messages, then whatever is left, fed in fuzz-chosen slices.
        cut = reader.uint(1) + 1
        blob = reader.rest()
        wire = b""
        for chunk in blob.split(b"\xff\xfe")[:-1]:
            headers_length = min(chunk[0] if chunk else 0, len(chunk) - 1)
            wire += _frame(chunk[1 : 1 + headers_length], chunk[1 + headers_length :])
        wire += blob.rpartition(b"\xff\xfe")[2]
        decoder = Decoder()
        try:
            for start in range(0, len(wire), cut):
                decoder.feed(wire[start : start + cut])
        except EventStreamError as first:
            try:
                decoder.feed(b"")
            except EventStreamError as again:
                assert again is first
            else:
                raise AssertionError("a failed decoder accepted more input")

    def check(data: bytes) -> None:
        reader = Reader(data)
        mode = reader.uint(1) % 4
        if mode == 0:
            decoded_round_trip(reader.rest())
        elif mode == 1:
            headers_length = reader.uint(2)
            rest = reader.rest()
            headers_length = min(headers_length, len(rest))
            decoded_round_trip(_frame(rest[:headers_length], rest[headers_length:]))
        elif mode == 2:
            try:
                decode_headers(reader.rest())
            except EventStreamError:
                pass
        else:
            stream(reader)

    return check


def _nova_events() -> Callable[[bytes], None]:
    from callbridge.agent.providers.nova_events import NovaOutput, decode_output_event

    def check(data: bytes) -> None:
        # One event per line, as the SDK hands them over: each chunk's bytes are one JSON event.
        output = NovaOutput()
        for line in data.split(b"\n")[:16]:
            event = decode_output_event(line)
            if event is not None:  # what the read loop does with each chunk
                output.feed(event)

    return check


# ---------------------------------------------------------------- YAML: config and flows


def _text(data: bytes) -> str | None:
    """Files are read as UTF-8 (``read_source_text`` refuses anything else with a SourceError)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _config() -> Callable[[bytes], None]:
    from callbridge.app.config import config_from
    from callbridge.yamlsource import SourceError, load_yaml_text

    def check(data: bytes) -> None:
        text = _text(data)
        if text is None:
            return
        try:
            config_from(load_yaml_text(text, "fuzz.yaml"))
        except SourceError:
            pass

    return check


def _flow() -> Callable[[bytes], None]:
    from callbridge.ivr import load_flow_text
    from callbridge.yamlsource import SourceError

    # Flows name audio files relative to their folder: give them the one the support flow plays.
    base_dir = Path(tempfile.mkdtemp(prefix="callbridge-fuzz-flow-"))
    shutil.copy(Path(__file__).parents[1] / "unit" / "flows" / "chime.wav", base_dir)

    def check(data: bytes) -> None:
        text = _text(data)
        if text is None:
            return
        try:
            load_flow_text(text, "fuzz.yaml", agents={"assistant"}, trunks={"twilio"},
                           settings={"operator_uri": "sip:operator@example.com"}, base_dir=base_dir)
        except SourceError:
            pass

    return check


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("sip_parser", "sip/parser.py + message.py: parse, accessors, 400 for partials, "
               "serialize round trip, TCP framing", _sip_parser, dictionary="sip.dict"),
        Target("sip_uri", "sip/uri.py + address.py: URI, name-addr, Via: parse and round trip",
               _sip_uri, max_len=512, dictionary="sip.dict"),
        Target("sdp", "sip/sdp.py: parse, round trip, offer/answer", _sdp, max_len=2048,
               dictionary="sdp.dict"),
        Target("rtp", "rtp/packet.py: parse and round trip", _rtp, max_len=1500),
        Target("rtcp", "rtp/rtcp.py: compound parse, round trip, stats", _rtcp, max_len=1500),
        Target("rfc4733", "media/dtmf/rfc4733.py: receiver on arbitrary packets; sender→receiver",
               _rfc4733, max_len=512),
        Target("eventstream", "standins/eventstream.py: decode, stream decoder, round trip",
               _eventstream, max_len=2048),
        Target("nova_events", "agent/providers/nova_events.py: output event JSON → agent events",
               _nova_events, max_len=2048, dictionary="nova_events.dict"),
        Target("config", "app/config.py + yamlsource.py: YAML → Config or SourceError", _config,
               instrument=("callbridge", "yaml"), max_len=1024, slow_seconds=1.0, dictionary="yaml.dict"),
        # PyYAML's own branches guide the config target; here they would only slow the loader down 3x.
        Target("flow", "ivr/loader.py + yamlsource.py: YAML → Flow or SourceError", _flow,
               max_len=1280, slow_seconds=1.0, dictionary="yaml.dict"),
    )
}
