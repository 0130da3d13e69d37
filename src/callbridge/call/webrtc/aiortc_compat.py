"""Every change we make to aiortc/aioice behaviour, in one place, scoped to our own peer connections.

Three things stock aiortc 1.16 does not do for a softphone:

1. **Answer telephone-event (RFC 4733).** aiortc's codec table has no telephone-event, so a
   browser's ``RTCDTMFSender`` stays disabled. :class:`SoftphonePeerConnection` adds the
   browser's own telephone-event/8000 entry to the audio transceiver's negotiated codecs after
   ``setRemoteDescription`` (so the answer lists it); aiortc's global table is left alone.
2. **Keep those packets from aiortc's decoder**, whose thread dies at the first one ("No decoder
   found for audio/telephone-event") and silences the call: :func:`tap_payload_type` wraps the
   one receiver's ``_handle_rtp_packet`` so the events go to our DTMF collector instead.
3. **Loopback host candidates.** aioice leaves 127.0.0.1 out of its host addresses, so a server
   listening on loopback (the tests, a laptop) offers no candidate the browser can reach.
   :func:`extra_host_addresses` adds addresses for the gathering done in the current asyncio
   context only (a ContextVar consulted by a wrapper around ``aioice.ice.get_host_addresses``).

The private names used (``RTCRtpTransceiver._codecs``, ``RTCRtpReceiver._handle_rtp_packet``,
``aioice.ice.get_host_addresses``) are checked by :func:`check_supported` at start-up: another
aiortc version is refused (the browser softphone is then off, with a log line) rather than
half-working.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aioice.ice
import aiortc
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

SUPPORTED_AIORTC = ("1.16.",)  # the private names below were read in these releases
TELEPHONE_EVENT = "telephone-event"
TELEPHONE_EVENT_CLOCK_RATE = 8000  # what SIP peers use; Chromium offers it next to 48000

PacketSink = Callable[[int, bool, bytes, int], None]  # (timestamp, marker, payload, ssrc)

_extra_hosts: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("callbridge_ice_hosts", default=())
_stock_host_addresses = aioice.ice.get_host_addresses


class UnsupportedAiortc(RuntimeError):
    """The installed aiortc is not one these adaptations were written for."""


def check_supported() -> None:
    version = getattr(aiortc, "__version__", "?")
    if not version.startswith(SUPPORTED_AIORTC):
        raise UnsupportedAiortc(f"aiortc {version} is not supported (need {' or '.join(SUPPORTED_AIORTC)}x)")
    codecs_kept = "_codecs" in aiortc.RTCRtpTransceiver.__init__.__code__.co_names
    if not hasattr(aiortc.RTCRtpReceiver, "_handle_rtp_packet") or not codecs_kept:
        raise UnsupportedAiortc(f"aiortc {version} lacks the internals call/webrtc relies on")
    _install_host_addresses()


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses: list[str] = _stock_host_addresses(use_ipv4, use_ipv6)
    extra = [a for a in _extra_hosts.get() if a not in addresses]
    return addresses + extra


def _install_host_addresses() -> None:
    if aioice.ice.get_host_addresses is not _host_addresses:
        aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def extra_host_addresses(addresses: tuple[str, ...]) -> Iterator[None]:
    """Gathering started inside this block (in this task, or tasks it starts) also offers ``addresses``."""
    token = _extra_hosts.set(addresses)
    try:
        yield
    finally:
        _extra_hosts.reset(token)


def telephone_event_codec(offer_sdp: str) -> Any | None:
    """The offer's telephone-event/8000 codec entry (its payload type is the browser's), if any."""
    description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    for media in description.media:
        if media.kind != "audio":
            continue
        for codec in media.rtp.codecs:
            if codec.name.lower() == TELEPHONE_EVENT and codec.clockRate == TELEPHONE_EVENT_CLOCK_RATE:
                return copy.deepcopy(codec)
    return None


class SoftphonePeerConnection(RTCPeerConnection):
    """An answering peer connection that also takes the browser's telephone-event (see the module doc)."""

    telephone_event_pt: int | None = None

    async def setRemoteDescription(self, sessionDescription: RTCSessionDescription) -> None:
        await super().setRemoteDescription(sessionDescription)
        codec = telephone_event_codec(sessionDescription.sdp)
        if codec is None:
            return
        for transceiver in self.getTransceivers():
            if transceiver.kind == "audio" and transceiver._codecs:
                # After the audio codec: aiortc sends with the first entry and must keep sending Opus.
                transceiver._codecs.append(codec)
                self.telephone_event_pt = codec.payloadType
                return


def tap_payload_type(receiver: Any, payload_type: int, sink: PacketSink) -> None:
    """Packets of ``payload_type`` reaching this receiver go to ``sink`` instead of aiortc's decoder."""
    handle: Callable[[Any, int], Awaitable[None]] = receiver._handle_rtp_packet

    async def tapped(packet: Any, arrival_time_ms: int) -> None:
        if packet.payload_type == payload_type:
            sink(packet.timestamp, bool(packet.marker), packet.payload, packet.ssrc)
            return
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = tapped
