"""Answering a call: capacity, trunk and route checks, the SDP answer, ringing, then the application.

The trunk is matched by who is calling (:func:`~callbridge.sip.ua.uas.caller_of`): behind a
trusted proxy, the caller the proxy named, not the proxy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..sip.sdp import NotAcceptable, SdpError, parse_sdp
from ..sip.session import InviteSession
from ..sip.ua.config import Availability, Unavailable, always_available
from ..sip.ua.uas import caller_of
from ..sip.uri import SipUri
from . import events as ev
from . import srtp_policy
from .call import Call, CallStatus, Direction, EndReason, Leg
from .media_setup import NoMediaPortsError
from .trunks import called_user

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("callbridge.call")

# No RTP port pair free: 503 with Retry-After (RFC 3261 §21.5.4). Ports come back as calls end, so
# the wait is short; a proxy that honours it sends new calls to another server meanwhile (§16.7).
NO_MEDIA_PORTS_RETRY_AFTER_S = 10
# The UA core asks the same availability for each INVITE (sip/ua/uas.py); asking again here
# closes the gap between that answer and this call being counted.
UNAVAILABLE_LOG_INTERVAL_S = 10.0


class InboundCalls:
    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        # Whether a new call may start (full, draining, starting: 503 + Retry-After); app/availability.py.
        self.availability: Availability = always_available
        self.ring_seconds = 0.0
        self._unavailable_logged_at = -UNAVAILABLE_LOG_INTERVAL_S
        self._unavailable_unlogged = 0

    async def accept(self, session: InviteSession) -> None:
        manager = self.manager
        request = session.invite
        unavailable = self.availability()
        if unavailable is not None:
            self._reject(session, 503, headers=[("Retry-After", str(unavailable.retry_after))])
            self._warn_unavailable(unavailable)
            return
        source = caller_of(session)
        trunk = manager.trunks.match(request, source)
        if manager.trunks.trunks and trunk is None:
            self._reject(session, 404)
            return
        caller = request.from_addr
        # The UA core removed the proxy's source header: X- headers here are the caller's own.
        leg = Leg(session)
        call = Call(direction=Direction.INBOUND, leg=leg, trunk=trunk.name if trunk else None,
                    caller=caller.uri.user if isinstance(caller.uri, SipUri) else str(caller.uri),
                    caller_name=caller.display_name, called=called_user(request),
                    sip_headers={n: v for n, v in request.headers if n.lower().startswith("x-")})
        session.app = call
        manager.register(call)
        manager.set_status(call, CallStatus.RINGING)
        call.publish(ev.InviteReceived(source=str(source)))
        if manager.router is not None:
            route = manager.router(call)
            if route is None:
                self._refuse(call, 404, "no route for the called number")
                return
            call.publish(ev.RouteChosen(route=route))
        try:
            offer = parse_sdp(request.body) if request.body else None
        except SdpError as exc:
            log.warning("bad SDP offer on %s: %s", session.call_id, exc)
            self._refuse(call, 400, None, sip_reason="Bad SDP")
            return
        if offer is None:
            self._refuse(call, 488, None, sip_reason="No SDP offer")
            return
        transport, where = getattr(session.source, "transport", "udp"), f"trunk {trunk.name}" if trunk else "server"
        try:
            srtp_mode = srtp_policy.effective_mode((trunk.srtp if trunk else None) or manager.media.policy.srtp,
                                                   transport, where=where)
        except srtp_policy.SrtpRefused as exc:
            srtp_policy.log_refusal(f"{exc}; call refused with 488")
            self._refuse(call, 488, str(exc))
            return
        srtp_policy.note_offer_transport(offer, transport, where=where)
        try:
            socket = await manager.media.open_rtp()
        except NoMediaPortsError as exc:
            self._refuse(call, 503, str(exc), headers=[("Retry-After", str(NO_MEDIA_PORTS_RETRY_AFTER_S))],
                         end_reason=EndReason.NO_MEDIA_PORTS)
            return
        try:
            answer = manager.media.answer_offer(offer, socket, srtp_mode)
        except NotAcceptable as exc:
            socket.close()
            self._refuse(call, 488, str(exc))
            return
        if not session.is_active:  # cancelled while we opened the port
            socket.close()
            return
        leg.sdp_session_id = answer.sdp.origin.sess_id
        leg.stream = manager.media.open_stream(call, socket, answer, manager.dtmf_handler(call))
        manager.act(lambda now: manager.ua.ring(session, now))
        if self.ring_seconds:
            await asyncio.sleep(self.ring_seconds)
            if not session.is_active:  # the caller gave up (CANCEL) while ringing
                return
        manager.act(lambda now: manager.ua.answer(session, answer.sdp.encode(), now))
        manager.media.start(call)
        manager.set_status(call, CallStatus.ACTIVE)
        manager.run_app(call)

    def _reject(self, session: InviteSession, status: int, *, sip_reason: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:
        self.manager.act(lambda now: self.manager.ua.reject(session, status, now, reason=sip_reason,
                                                            headers=headers))

    def _refuse(self, call: Call, status: int, reason: str | None, *, sip_reason: str | None = None,
                headers: list[tuple[str, str]] | None = None, end_reason: EndReason = EndReason.REJECTED) -> None:
        """Reject a registered call with ``status`` and end it; ``reason`` is noted on the call."""
        self._reject(call.leg.sip().session, status, sip_reason=sip_reason, headers=headers)
        if reason is not None:
            call.publish(ev.Rejected(reason=reason))
        self.manager.finish(call, end_reason)

    def _warn_unavailable(self, unavailable: Unavailable) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._unavailable_logged_at < UNAVAILABLE_LOG_INTERVAL_S:
            self._unavailable_unlogged += 1
            return
        log.warning("not taking new calls (%s): INVITE got 503 (%d more since the last warning)",
                    unavailable.reason, self._unavailable_unlogged)
        self._unavailable_logged_at, self._unavailable_unlogged = now, 0
