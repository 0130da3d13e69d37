"""The SDP data model (RFC 4566 §5): a session description, its media sections, and how it is written.

Pure data: :meth:`SessionDescription.serialize` writes the lines in the order
RFC 4566 §5 gives; reading is :mod:`.parse`, offer/answer :mod:`.offer_answer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


class SdpError(ValueError):
    """A session description that does not follow RFC 4566 / RFC 3264."""


class NotAcceptable(SdpError):
    """No offered audio stream can be accepted: the caller should answer 488."""


SDP_VERSION = 0  # RFC 4566 §5.1
NETTYPE_IN = "IN"
ADDRTYPE_IP4 = "IP4"
ADDRTYPE_IP6 = "IP6"
DEFAULT_SESSION_NAME = "callbridge"
MAX_PORT = 65535
MAX_PAYLOAD_TYPE = 127  # RFC 3550 §5.1: 7 bits
CRYPTO = "crypto"  # the SDES attribute (RFC 4568 §9.1)

SENDRECV, SENDONLY, RECVONLY, INACTIVE = "sendrecv", "sendonly", "recvonly", "inactive"
DIRECTIONS = (SENDRECV, SENDONLY, RECVONLY, INACTIVE)


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



# -- serializing ----------------------------------------------------------------


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

