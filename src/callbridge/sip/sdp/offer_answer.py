"""The RFC 3264 offer/answer model for an audio-only phone gateway.

``negotiate_answer`` answers a remote offer with one audio codec (or raises
``NotAcceptable`` for a 488); ``build_offer`` / ``apply_answer`` cover the
calls we place and our re-INVITEs; ``is_hold`` and the direction helpers read
what a description says about who may send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .model import (
    ADDRTYPE_IP4,
    ADDRTYPE_IP6,
    CRYPTO,
    DIRECTIONS,
    INACTIVE,
    NETTYPE_IN,
    RECVONLY,
    SENDONLY,
    SENDRECV,
    STATIC_PAYLOAD_TYPES,
    Connection,
    MediaDescription,
    NotAcceptable,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
)

DEFAULT_ORIGIN_USER = "-"  # RFC 4566 §5.2: no user name
DEFAULT_PTIME_MS = 20  # RFC 3551 §4.5: the default packetization for the audio codecs we use
TELEPHONE_EVENT = "telephone-event"  # RFC 4733 §7.1.1
TELEPHONE_EVENT_CLOCK = 8000
DEFAULT_TELEPHONE_EVENT_FMTP = "0-16"  # RFC 4733 §2.4.1: the DTMF events and flash
COMFORT_NOISE = "CN"  # RFC 3389 §5
STATIC_CN_PT = 13  # RFC 3551 table 4
RTP_PROTOS = ("RTP/AVP",)
AVP = "RTP/AVP"
SAVP = "RTP/SAVP"  # RFC 3711 §12: SRTP, keyed here by SDES a=crypto (RFC 4568)
# RFC 3264 §8.4: 0.0.0.0 means "send nothing to me"; "::" is its IPv6 twin in the wild.
HOLD_ADDRESSES = ("0.0.0.0", "::")


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
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
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
