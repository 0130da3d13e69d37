"""A browser's leg of a call: a WebRTC peer connection instead of a SIP dialog.

It offers what every leg offers (see :class:`~callbridge.call.call.Leg`): an id in place of the
SIP Call-ID, the stream, ``end`` (close the peer connection: the browser sees the call end) and
``release``. What only SIP can do (hold by re-INVITE, REFER) is refused by :meth:`WebRtcLeg.sip`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, NoReturn

from ...media.webrtc_audio import WebRtcAudio

if TYPE_CHECKING:
    from ..manager import CallManager

ID_PREFIX = "webrtc-"


class NotSipError(ValueError):
    """A SIP-only operation (re-INVITE, REFER) asked of a browser call."""


@dataclass(eq=False)
class WebRtcLeg:
    source: ClassVar[str] = "webrtc"
    # Closes the peer connection and everything it holds (call/webrtc/peer.py); safe to call twice.
    close: Callable[[], None] = lambda: None
    stream: WebRtcAudio | None = None
    id: str = field(default_factory=lambda: ID_PREFIX + uuid.uuid4().hex)
    remote: str | None = None  # the browser's address, as HTTP saw it

    @property
    def sip_call_id(self) -> str:
        """Lookups by SIP Call-ID find a browser call by this id."""
        return self.id

    @property
    def awaiting_ack(self) -> bool:
        return False  # media starts once ICE and DTLS are up: the address is proven

    def sip(self) -> NoReturn:
        raise NotSipError("a browser (WebRTC) call has no SIP dialog: hold and transfer are not available")

    def end(self, manager: CallManager) -> None:
        self.close()

    def release(self) -> None:
        self.close()
