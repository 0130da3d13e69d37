"""Reading SDP (RFC 4566): ``parse_sdp`` turns a body into a :class:`SessionDescription` or raises ``SdpError``."""

from __future__ import annotations

import re

from .model import (
    DIRECTIONS,
    MAX_PAYLOAD_TYPE,
    MAX_PORT,
    SDP_VERSION,
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
)

# RFC 4566 §5: the only line types, and which of them may appear per level.
SESSION_ONLY_TYPES = frozenset("vostrzuep")
KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_LINE_SPLIT = re.compile(r"\r?\n")


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

