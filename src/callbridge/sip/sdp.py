"""SDP (RFC 4566) parsing and serialization, and the RFC 3264 offer/answer
model for an audio-only phone gateway.

Pure data in, data out: no sockets, no clocks. ``parse_sdp`` turns a body into
a ``SessionDescription``; ``negotiate_answer`` answers a remote offer;
``build_offer`` / ``apply_answer`` cover the calls we place and re-INVITEs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal


class SdpError(ValueError):
    """A session description that does not follow RFC 4566 / RFC 3264."""


class NotAcceptable(SdpError):
    """No offered audio stream can be accepted: the caller should answer 488."""


SDP_VERSION = 0
NETTYPE_IN = "IN"
ADDRTYPE_IP4 = "IP4"
ADDRTYPE_IP6 = "IP6"
DEFAULT_SESSION_NAME = "callbridge"
DEFAULT_ORIGIN_USER = "-"
DEFAULT_PTIME_MS = 20
MAX_PORT = 65535
MAX_PAYLOAD_TYPE = 127
TELEPHONE_EVENT = "telephone-event"
COMFORT_NOISE = "CN"
TELEPHONE_EVENT_CLOCK = 8000
DEFAULT_TELEPHONE_EVENT_FMTP = "0-16"
STATIC_CN_PT = 13
RTP_PROTOS = ("RTP/AVP",)
AVP = "RTP/AVP"
SAVP = "RTP/SAVP"  # RFC 3711 §12: SRTP, keyed here by SDES a=crypto (RFC 4568)
CRYPTO = "crypto"

SENDRECV, SENDONLY, RECVONLY, INACTIVE = "sendrecv", "sendonly", "recvonly", "inactive"
DIRECTIONS = (SENDRECV, SENDONLY, RECVONLY, INACTIVE)
# RFC 3264 §8.4: 0.0.0.0 means "send nothing to me"; "::" is its IPv6 twin in the wild.
HOLD_ADDRESSES = ("0.0.0.0", "::")

# RFC 4566 §5: the only line types, and which of them may appear per level.
SESSION_ONLY_TYPES = frozenset("vostrzuep")
KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_LINE_SPLIT = re.compile(r"\r?\n")


@dataclass(frozen=True)
class RtpMap:
    """One ``a=rtpmap`` entry (RFC 4566 §6): encoding/clock[/channels]."""

    encoding: str
    clock_rate: int
    channels: int | None = None

    @property
    def channel_count(self) -> int:
        # RFC 4566 §6: for audio, a missing encoding parameter means one channel.
        return self.channels or 1

    def __str__(self) -> str:
        base = f"{self.encoding}/{self.clock_rate}"
        return base if self.channels is None else f"{base}/{self.channels}"


# RFC 3551 §6 table 4: static audio payload types, usable without a=rtpmap.
# G722 is 8000 on the wire although it samples at 16 kHz (RFC 3551 §4.5.2).
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap("PCMU", 8000), 3: RtpMap("GSM", 8000), 4: RtpMap("G723", 8000),
    5: RtpMap("DVI4", 8000), 6: RtpMap("DVI4", 16000), 7: RtpMap("LPC", 8000),
    8: RtpMap("PCMA", 8000), 9: RtpMap("G722", 8000), 10: RtpMap("L16", 44100, 2),
    11: RtpMap("L16", 44100), 12: RtpMap("QCELP", 8000), 13: RtpMap("CN", 8000),
    14: RtpMap("MPA", 90000), 15: RtpMap("G728", 8000), 16: RtpMap("DVI4", 11025),
    17: RtpMap("DVI4", 22050), 18: RtpMap("G729", 8000),
}


@dataclass(frozen=True)
class Connection:
    """A ``c=`` line (RFC 4566 §5.7); ``address`` may carry a multicast /ttl."""

    address: str
    addrtype: str = ADDRTYPE_IP4
    nettype: str = NETTYPE_IN

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Origin:
    """The ``o=`` line (RFC 4566 §5.2)."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass
class Timing:
    """A ``t=`` line and its ``r=`` repeats (RFC 4566 §5.9-5.10)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass
class Attribute:
    """An ``a=`` line kept verbatim: ``name`` or ``name:value`` (RFC 4566 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass
class MediaDescription:
    """One ``m=`` section and what it carries (RFC 4566 §5.14)."""

    media: str
    port: int
    proto: str
    formats: list[int] = field(default_factory=list)
    format_tokens: list[str] = field(default_factory=list)  # non-RTP protos only
    port_count: int | None = None
    info: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    maxptime: int | None = None
    direction: str | None = None  # None: inherit the session level
    rtcp_port: int | None = None
    rtcp_connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    def codec(self, pt: int) -> RtpMap | None:
        """The rtpmap for ``pt``, falling back to the RFC 3551 static table."""
        return self.rtpmap.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)

    def add_attribute(self, name: str, value: str | None = None) -> None:
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError(f"a={name} value spans lines")
        self.attributes.append(Attribute(name, value))


def crypto_values(media: MediaDescription) -> list[str]:
    """The stream's ``a=crypto`` values in order (RFC 4568 §9.1); rtp/srtp.py parses them."""
    return [a.value for a in media.attributes if a.name == CRYPTO and a.value is not None]


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 4566 §5)."""

    origin: Origin
    session_name: str = DEFAULT_SESSION_NAME
    version: int = SDP_VERSION
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    key: str | None = None
    direction: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def media_connection(self, media: MediaDescription) -> Connection | None:
        # RFC 4566 §5.7: a media-level c= overrides the session-level one.
        return media.connection or self.connection

    def media_direction(self, media: MediaDescription) -> str:
        # RFC 3264 §5.1: media-level direction wins; the default is sendrecv.
        return media.direction or self.direction or SENDRECV

    def serialize(self) -> str:
        return "".join(f"{line}\r\n" for line in _session_lines(self))

    def encode(self) -> bytes:
        return self.serialize().encode("utf-8")

    def __str__(self) -> str:
        return self.serialize()


# ---------------------------------------------------------------- parsing


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raise ``SdpError`` saying what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")  # RFC 4566 §5: UTF-8 is the default charset
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not UTF-8: {exc}") from None
    lines = [(n, ln) for n, ln in enumerate(_LINE_SPLIT.split(text), start=1) if ln.strip()]
    if not lines or not lines[0][1].startswith("v="):
        raise SdpError("SDP must start with a v= line (RFC 4566 §5)")
    parser = _Parser()
    for number, line in lines:
        if "\r" in line or "\0" in line:
            # RFC 4566 §9: byte-string and text exclude NUL, CR and LF. Kept, a lone CR
            # would be echoed into our answer (fmtp, rtpmap) as a line break for lenient peers.
            raise SdpError(f"line {number}: CR or NUL inside a line (RFC 4566 §9)")
        try:
            parser.feed(line)
        except SdpError as exc:
            raise SdpError(f"line {number} {line!r}: {exc}") from None
    return parser.finish()


class _Parser:
    """Line-by-line state: session level until the first m= line."""

    def __init__(self) -> None:
        placeholder = Origin("", 0, 0, "", "", "")
        self.sdp = SessionDescription(origin=placeholder, session_name="", timing=[])
        self.seen: set[str] = set()

    def feed(self, line: str) -> None:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("expected '<type>=<value>'")
        kind, value = line[0], line[2:]
        if kind not in KNOWN_TYPES:
            # RFC 4566 §5: an unknown type letter makes the whole description unusable.
            raise SdpError(f"unknown line type {kind!r}")
        if kind == "m":
            if "o" not in self.seen:
                raise SdpError("m= before the o= line (RFC 4566 §5)")
            self.sdp.media.append(_parse_media_line(value))
        elif self.sdp.media:
            self._feed_media(kind, value, self.sdp.media[-1])
        else:
            self._feed_session(kind, value)

    def _feed_session(self, kind: str, value: str) -> None:
        sdp = self.sdp
        if kind in "voscuizk" and kind in self.seen:
            raise SdpError(f"duplicate {kind}= line at session level")
        self.seen.add(kind)
        if kind == "v":
            if value.strip() != str(SDP_VERSION):
                raise SdpError(f"unsupported SDP version {value!r}")
        elif kind == "o":
            sdp.origin = _parse_origin(value)
        elif kind == "s":
            # RFC 4566 §5.3 writes a nameless session as "s= "; read it back as "".
            sdp.session_name = value if value.strip() else ""
        elif kind == "c":
            sdp.connection = _parse_connection(value)
        elif kind == "t":
            sdp.timing.append(_parse_timing(value))
        elif kind == "r":
            if not sdp.timing:
                raise SdpError("r= without a preceding t=")
            sdp.timing[-1].repeats.append(value)
        elif kind == "a":
            attr = _split_attribute(value)
            if attr.name in DIRECTIONS and attr.value is None:
                sdp.direction = attr.name
            else:
                sdp.attributes.append(attr)
        elif kind == "b":
            sdp.bandwidths.append(_check_bandwidth(value))
        elif kind == "e":
            sdp.emails.append(value)
        elif kind == "p":
            sdp.phones.append(value)
        else:
            setattr(sdp, _VERBATIM_FIELDS[kind], value)

    def _feed_media(self, kind: str, value: str, media: MediaDescription) -> None:
        if kind in SESSION_ONLY_TYPES:
            raise SdpError(f"{kind}= is not allowed in a media section (RFC 4566 §5)")
        if kind == "c":
            if media.connection is not None:
                raise SdpError("duplicate c= line in media section")
            media.connection = _parse_connection(value)
        elif kind == "b":
            media.bandwidths.append(_check_bandwidth(value))
        elif kind == "i":
            media.info = value
        elif kind == "k":
            media.key = value
        else:
            _apply_media_attribute(media, value)

    def finish(self) -> SessionDescription:
        if "o" not in self.seen:
            raise SdpError("missing o= line (RFC 4566 §5.2)")
        if "s" not in self.seen:
            raise SdpError("missing s= line (RFC 4566 §5.3)")
        if not self.sdp.timing:
            # Lenient: some stacks omit t=; RFC 4566 §5.9 "0 0" means unbounded.
            self.sdp.timing.append(Timing())
        return self.sdp


_VERBATIM_FIELDS = {"i": "info", "u": "uri", "z": "time_zones", "k": "key"}


def _parse_int(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone accepts "²"
        raise SdpError(f"{what} is not a number: {text!r}")
    number = int(text)
    if number < low or (high is not None and number > high):
        raise SdpError(f"{what} out of range: {number}")
    return number


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError("o= needs 6 fields (RFC 4566 §5.2)")
    user, sess_id, sess_version, nettype, addrtype, address = parts
    return Origin(user, _parse_int(sess_id, "sess-id"),
                  _parse_int(sess_version, "sess-version"), nettype, addrtype, address)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError("c= needs '<nettype> <addrtype> <address>' (RFC 4566 §5.7)")
    nettype, addrtype, address = parts
    return Connection(address=address, addrtype=addrtype, nettype=nettype)


def _parse_timing(value: str) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError("t= needs '<start> <stop>' (RFC 4566 §5.9)")
    return Timing(_parse_int(parts[0], "start time"), _parse_int(parts[1], "stop time"))


def _check_bandwidth(value: str) -> str:
    kind, sep, amount = value.partition(":")
    if not sep or not kind or not (amount.isascii() and amount.strip().isdigit()):
        raise SdpError("b= needs '<bwtype>:<bandwidth>' (RFC 4566 §5.8)")
    return value


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError("m= needs '<media> <port> <proto> <fmt> ...' (RFC 4566 §5.14)")
    media, port_text, proto, *fmts = parts
    port_text, _, count_text = port_text.partition("/")
    port = _parse_int(port_text, "port", 0, MAX_PORT)
    desc = MediaDescription(media=media, port=port, proto=proto)
    if count_text:
        desc.port_count = _parse_int(count_text, "number of ports", 1)
    if not fmts and port != 0:
        raise SdpError("m= lists no formats (RFC 4566 §5.14)")
    if desc.is_rtp:
        desc.formats = [_parse_int(f, "payload type", 0, MAX_PAYLOAD_TYPE) for f in fmts]
    else:
        desc.format_tokens = fmts
    return desc


def _split_attribute(raw: str) -> Attribute:
    name, sep, value = raw.partition(":")
    if not name:
        raise SdpError("empty attribute name")
    return Attribute(name, value if sep else None)


def _apply_media_attribute(media: MediaDescription, raw: str) -> None:
    attr = _split_attribute(raw)
    name, value = attr.name, attr.value
    if name in DIRECTIONS and value is None:
        media.direction = name
    elif name == "rtpmap" and value is not None and media.is_rtp:
        pt, rtpmap = _parse_rtpmap(value)
        media.rtpmap[pt] = rtpmap
    elif name == "fmtp" and value is not None and media.is_rtp:
        pt_text, _, params = value.partition(" ")
        media.fmtp[_parse_int(pt_text, "fmtp payload type", 0, MAX_PAYLOAD_TYPE)] = params.strip()
    elif name in ("ptime", "maxptime") and value is not None:
        setattr(media, name, _parse_ms(value, name))
    elif name == "rtcp" and value is not None:
        _parse_rtcp(media, value)
    else:
        media.attributes.append(attr)


def _parse_rtpmap(value: str) -> tuple[int, RtpMap]:
    # RFC 4566 §6: a=rtpmap:<pt> <encoding name>/<clock rate>[/<encoding parameters>]
    pt_text, _, spec = value.strip().partition(" ")
    pt = _parse_int(pt_text, "rtpmap payload type", 0, MAX_PAYLOAD_TYPE)
    pieces = spec.strip().split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError("rtpmap needs '<pt> <encoding>/<clock>[/<channels>]'")
    clock = _parse_int(pieces[1], "clock rate", 1)
    channels = _parse_int(pieces[2], "channels", 1) if len(pieces) == 3 else None
    return pt, RtpMap(pieces[0], clock, channels)


def _parse_ms(value: str, name: str) -> int:
    # RFC 4566 §6 gives ptime in milliseconds; a few stacks write "20.0".
    try:
        ms = float(value.strip())
    except ValueError:
        raise SdpError(f"{name} is not a number: {value!r}") from None
    if not 0 < ms < 1e6:
        raise SdpError(f"{name} out of range: {value!r}")
    return max(1, round(ms))


def _parse_rtcp(media: MediaDescription, value: str) -> None:
    # RFC 3605 §2.1: a=rtcp:<port> [<nettype> <addrtype> <address>]
    port_text, _, rest = value.strip().partition(" ")
    media.rtcp_port = _parse_int(port_text, "rtcp port", 0, MAX_PORT)
    media.rtcp_connection = _parse_connection(rest) if rest.strip() else None


# ---------------------------------------------------------------- serializing


def _session_lines(sdp: SessionDescription) -> Iterable[str]:
    # RFC 4566 §5: v o s i u e p c b t r z k a, then the media sections.
    yield f"v={sdp.version}"
    yield f"o={sdp.origin}"
    yield f"s={sdp.session_name or ' '}"  # RFC 4566 §5.3: never empty
    if sdp.info is not None:
        yield f"i={sdp.info}"
    if sdp.uri is not None:
        yield f"u={sdp.uri}"
    yield from (f"e={e}" for e in sdp.emails)
    yield from (f"p={p}" for p in sdp.phones)
    if sdp.connection is not None:
        yield f"c={sdp.connection}"
    yield from (f"b={b}" for b in sdp.bandwidths)
    for timing in sdp.timing or [Timing()]:
        yield f"t={timing.start} {timing.stop}"
        yield from (f"r={r}" for r in timing.repeats)
    if sdp.time_zones is not None:
        yield f"z={sdp.time_zones}"
    if sdp.key is not None:
        yield f"k={sdp.key}"
    yield from (f"a={a}" for a in sdp.attributes)
    if sdp.direction is not None:
        yield f"a={sdp.direction}"
    for media in sdp.media:
        yield from _media_lines(media)


def _media_lines(m: MediaDescription) -> Iterable[str]:
    port = str(m.port) if m.port_count is None else f"{m.port}/{m.port_count}"
    fmts = [str(pt) for pt in m.formats] + m.format_tokens
    yield " ".join([f"m={m.media}", port, m.proto, *fmts])
    if m.info is not None:
        yield f"i={m.info}"
    if m.connection is not None:
        yield f"c={m.connection}"
    yield from (f"b={b}" for b in m.bandwidths)
    if m.key is not None:
        yield f"k={m.key}"
    if m.rtcp_port is not None:
        suffix = f" {m.rtcp_connection}" if m.rtcp_connection else ""
        yield f"a=rtcp:{m.rtcp_port}{suffix}"
    ordered = m.formats + sorted((set(m.rtpmap) | set(m.fmtp)) - set(m.formats))
    for pt in ordered:
        if pt in m.rtpmap:
            yield f"a=rtpmap:{pt} {m.rtpmap[pt]}"
        if pt in m.fmtp:
            yield f"a=fmtp:{pt} {m.fmtp[pt]}"
    yield from (f"a={a}" for a in m.attributes)
    if m.ptime is not None:
        yield f"a=ptime:{m.ptime}"
    if m.maxptime is not None:
        yield f"a=maxptime:{m.maxptime}"
    if m.direction is not None:
        yield f"a={m.direction}"


# ---------------------------------------------------------------- offer/answer


@dataclass(frozen=True)
class Codec:
    """A negotiated RTP payload: the PT is the one written in the SDP."""

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None


@dataclass
class Answer:
    """Outcome of one offer/answer exchange for the audio stream we use.

    ``direction`` is what *we* may do (send/receive) on that stream.
    """

    sdp: SessionDescription
    codec: Codec
    telephone_event: Codec | None
    comfort_noise: Codec | None
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    ptime: int
    direction: str
    media_index: int

    @property
    def telephone_event_pt(self) -> int | None:
        return self.telephone_event.payload_type if self.telephone_event else None

    @property
    def comfort_noise_pt(self) -> int | None:
        return self.comfort_noise.payload_type if self.comfort_noise else None


def _flags(direction: str) -> tuple[bool, bool]:
    """(sends, receives) for a direction attribute."""
    return direction in (SENDRECV, SENDONLY), direction in (SENDRECV, RECVONLY)


def _from_flags(sends: bool, receives: bool) -> str:
    if sends and receives:
        return SENDRECV
    return SENDONLY if sends else (RECVONLY if receives else INACTIVE)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")


def answer_direction(offered: str, local: str = SENDRECV) -> str:
    """RFC 3264 §6.1: mirror the offer, then drop what we do not want."""
    offer_sends, offer_receives = _flags(offered)
    local_sends, local_receives = _flags(local)
    return _from_flags(offer_receives and local_sends, offer_sends and local_receives)


def effective_direction(sdp: SessionDescription, media: MediaDescription) -> str:
    """The stream's direction from its sender's side, counting c=0.0.0.0 as hold."""
    direction = sdp.media_direction(media)
    conn = sdp.media_connection(media)
    if conn is not None and conn.host in HOLD_ADDRESSES:
        # RFC 3264 §8.4: nothing may be sent to that peer, so it cannot receive.
        sends, _ = _flags(direction)
        return _from_flags(sends, False)
    return direction


def is_hold(sdp: SessionDescription) -> bool:
    """True if the first live audio stream does not want to receive media."""
    for media in sdp.media:
        if media.media == "audio" and media.port != 0:
            return effective_direction(sdp, media) in (SENDONLY, INACTIVE)
    return False


def _addrtype(address: str) -> str:
    try:
        return ADDRTYPE_IP6 if ipaddress.ip_address(address).version == 6 else ADDRTYPE_IP4
    except ValueError:
        return ADDRTYPE_IP4  # a host name (RFC 4566 §5.7 allows an FQDN)


def _new_session(local_address: str, session_id: int, session_version: int) -> SessionDescription:
    addrtype = _addrtype(local_address)
    origin = Origin(DEFAULT_ORIGIN_USER, session_id, session_version,
                    NETTYPE_IN, addrtype, local_address)
    return SessionDescription(origin=origin, connection=Connection(local_address, addrtype))


def _parse_preference(entry: str) -> tuple[str, int | None]:
    name, _, clock = entry.partition("/")
    return name.strip().upper(), int(clock) if clock else None


def _is_special(rtpmap: RtpMap) -> bool:
    return rtpmap.encoding.lower() == TELEPHONE_EVENT or rtpmap.encoding.upper() == COMFORT_NOISE


def _pick_codec(media: MediaDescription, preference: Sequence[str],
                prefer: Literal["local", "offer"]) -> Codec | None:
    wanted = [_parse_preference(p) for p in preference]
    offered = [(pt, rm) for pt in media.formats
               if (rm := media.codec(pt)) is not None and not _is_special(rm)]

    def matches(rm: RtpMap, want: tuple[str, int | None]) -> bool:
        # RFC 4855 §3: media subtype names are case-insensitive.
        return rm.encoding.upper() == want[0] and want[1] in (None, rm.clock_rate)

    if prefer == "local":
        pairs = ((pt, rm) for want in wanted for pt, rm in offered if matches(rm, want))
    else:
        pairs = ((pt, rm) for pt, rm in offered if any(matches(rm, w) for w in wanted))
    for pt, rm in pairs:
        return Codec(rm.encoding, pt, rm.clock_rate, rm.channel_count, media.fmtp.get(pt))
    return None


def _pick_special(media: MediaDescription, encoding: str, clock_rate: int) -> Codec | None:
    # RFC 4733 §2.1 / RFC 3389 §4: events and CN share the audio codec's clock.
    for pt in media.formats:
        rm = media.codec(pt)
        if rm and rm.encoding.lower() == encoding.lower() and rm.clock_rate == clock_rate:
            return Codec(rm.encoding, pt, rm.clock_rate, rm.channel_count, media.fmtp.get(pt))
    return None


def _rejected(media: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: a rejected stream keeps its m= line, with port 0 and a format.
    return MediaDescription(media=media.media, port=0, proto=media.proto,
                            formats=list(media.formats), format_tokens=list(media.format_tokens))


def _audio_media(codecs: Iterable[Codec], port: int, ptime: int, direction: str,
                 proto: str = RTP_PROTOS[0]) -> MediaDescription:
    media = MediaDescription(media="audio", port=port, proto=proto, ptime=ptime,
                             direction=direction)
    for codec in codecs:
        media.formats.append(codec.payload_type)
        channels = codec.channels if codec.channels > 1 else None
        media.rtpmap[codec.payload_type] = RtpMap(codec.name, codec.clock_rate, channels)
        if codec.fmtp:
            media.fmtp[codec.payload_type] = codec.fmtp
    return media


def _remote_endpoint(sdp: SessionDescription, media: MediaDescription) -> tuple[str, int, int]:
    conn = sdp.media_connection(media)
    if conn is None:
        raise SdpError("audio stream has no c= line (RFC 4566 §5.7)")
    # RFC 3605 §2.1 a=rtcp, else RFC 3550 §11: RTCP on the next port up.
    rtcp = media.rtcp_port if media.rtcp_port is not None else media.port + 1
    return conn.host, media.port, rtcp


def negotiate_answer(offer: SessionDescription, *, local_address: str, local_port: int,
                     codec_preference: Sequence[str], session_id: int, session_version: int,
                     local_direction: str = SENDRECV,
                     prefer: Literal["local", "offer"] = "local",
                     comfort_noise: bool = False,
                     accept_protos: Sequence[str] = RTP_PROTOS,
                     usable: Callable[[MediaDescription], bool] | None = None) -> Answer:
    """Answer ``offer`` with one audio codec; raise ``NotAcceptable`` for 488.

    ``prefer="local"`` walks ``codec_preference`` first (our order wins);
    ``prefer="offer"`` walks the offer's format list (RFC 3264 §6.1 default).
    Entries are "NAME" or "NAME/clock", e.g. "PCMU" or "G722/8000".
    ``usable`` is a further test a stream must pass (SRTP: a usable ``a=crypto``).
    """
    _check_direction(local_direction)
    if prefer not in ("local", "offer"):
        raise ValueError(f"prefer must be 'local' or 'offer', not {prefer!r}")
    protos = {p.upper() for p in accept_protos}
    answer_sdp = _new_session(local_address, session_id, session_version)
    result: Answer | None = None
    for index, media in enumerate(offer.media):
        codec = None
        acceptable = (result is None and media.media == "audio" and media.port != 0
                      and media.proto.upper() in protos and (usable is None or usable(media)))
        if acceptable:
            codec = _pick_codec(media, codec_preference, prefer)
        if codec is None:
            answer_sdp.media.append(_rejected(media))
            continue
        result = _accept_stream(offer, media, index, codec, answer_sdp,
                                local_port, local_direction, comfort_noise)
    if result is None:
        raise NotAcceptable("no offered audio stream has an acceptable codec "
                            f"(wanted {list(codec_preference)})")
    return result


def _accept_stream(offer: SessionDescription, media: MediaDescription, index: int,
                   codec: Codec, answer_sdp: SessionDescription, local_port: int,
                   local_direction: str, comfort_noise: bool) -> Answer:
    address, port, rtcp = _remote_endpoint(offer, media)
    event = _pick_special(media, TELEPHONE_EVENT, codec.clock_rate)
    noise = _pick_special(media, COMFORT_NOISE, codec.clock_rate) if comfort_noise else None
    direction = answer_direction(effective_direction(offer, media), local_direction)
    ptime = media.ptime or DEFAULT_PTIME_MS
    # RFC 3264 §6.1: the answer reuses the offer's payload type numbers.
    chosen = [c for c in (codec, event, noise) if c is not None]
    answer_sdp.media.append(_audio_media(chosen, local_port, ptime, direction, media.proto))
    return Answer(answer_sdp, codec, event, noise, address, port, rtcp, ptime, direction, index)


def build_offer(local_address: str, local_port: int,
                codecs: Sequence[tuple[str, int, int] | Codec], *,
                session_id: int, session_version: int,
                telephone_event_pt: int | None = 101, ptime: int = DEFAULT_PTIME_MS,
                direction: str = SENDRECV, comfort_noise: bool = False,
                proto: str = AVP, crypto: Sequence[str] = ()) -> SessionDescription:
    """An audio offer for a new call or a re-INVITE (sendonly = hold).

    RFC 3264 §8: a re-offer keeps ``session_id`` and bumps ``session_version``.
    ``crypto`` are ``a=crypto`` values (RFC 4568) for an SRTP offer (``proto`` RTP/SAVP).
    """
    _check_direction(direction)
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    chosen = [c if isinstance(c, Codec) else Codec(*c) for c in codecs]
    if comfort_noise:
        chosen.append(Codec(COMFORT_NOISE, STATIC_CN_PT, STATIC_PAYLOAD_TYPES[STATIC_CN_PT].clock_rate))
    if telephone_event_pt is not None:
        chosen.append(Codec(TELEPHONE_EVENT, telephone_event_pt, TELEPHONE_EVENT_CLOCK,
                            fmtp=DEFAULT_TELEPHONE_EVENT_FMTP))
    sdp = _new_session(local_address, session_id, session_version)
    media = _audio_media(chosen, local_port, ptime, direction, proto)
    for value in crypto:
        media.add_attribute(CRYPTO, value)
    sdp.media.append(media)
    return sdp


def static_codec(entry: str) -> Codec:
    """The RFC 3551 §6 static payload type for a codec preference entry ("PCMU", "G722",
    "DVI4/16000"), to offer it by number. G722 comes out at clock 8000 (RFC 3551 §4.5.2);
    a name with several static types and no clock gets the lowest type number."""
    name, clock = _parse_preference(entry)
    for pt, rtpmap in sorted(STATIC_PAYLOAD_TYPES.items()):
        if rtpmap.encoding.upper() == name and clock in (None, rtpmap.clock_rate):
            return Codec(rtpmap.encoding, pt, rtpmap.clock_rate, rtpmap.channel_count)
    raise ValueError(f"{entry!r} has no static RTP payload type (RFC 3551 §6)")


def apply_answer(offer: SessionDescription, answer: SessionDescription) -> Answer:
    """Read the remote answer to our ``offer``; ``Answer.sdp`` is theirs."""
    if len(answer.media) != len(offer.media):
        raise SdpError("answer has a different number of m= lines (RFC 3264 §6)")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media)):
        if ours.media != "audio" or ours.port == 0 or theirs.port == 0:
            continue
        codec = _first_codec(theirs, ours)
        if codec is None:
            continue
        address, port, rtcp = _remote_endpoint(answer, theirs)
        remote = effective_direction(answer, theirs)
        # Our side: what we offered, limited by what the answer allows.
        direction = answer_direction(remote, offer.media_direction(ours))
        return Answer(answer, codec,
                      _pick_special(theirs, TELEPHONE_EVENT, codec.clock_rate),
                      _pick_special(theirs, COMFORT_NOISE, codec.clock_rate),
                      address, port, rtcp, theirs.ptime or DEFAULT_PTIME_MS, direction, index)
    raise NotAcceptable("the answer accepted no audio stream with a codec we offered")


def _first_codec(theirs: MediaDescription, ours: MediaDescription) -> Codec | None:
    offered = {(rm.encoding.upper(), rm.clock_rate) for pt in ours.formats
               if (rm := ours.codec(pt)) is not None}
    for pt in theirs.formats:
        rm = theirs.codec(pt) or ours.codec(pt)
        if rm and not _is_special(rm) and (rm.encoding.upper(), rm.clock_rate) in offered:
            return Codec(rm.encoding, pt, rm.clock_rate, rm.channel_count, theirs.fmtp.get(pt))
    return None
