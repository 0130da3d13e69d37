"""Blind transfer both ways (RFC 3515): REFERs we send, and REFERs we are sent and must police.

A REFER makes us dial, so it passes the same checks as any dial: the target
must be one the call's inbound trunk lists, only one transfer per dialog, and
the outbound policy must allow the number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sip import events as sip_events
from ..sip.session import InviteSession
from ..sip.uri import SipUri
from . import events as ev
from .call import Call, CallStatus, Direction, EndReason
from .dial_policy import DialDenied, transfer_allowed
from .outbound import target_text

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("callbridge.call")

# RFC 3515 has no timeout for the transferee's new call; 30 s matches common PBX defaults.
REFER_DIAL_TIMEOUT = 30.0

# Decides what an incoming REFER does in a client (the call simulator): returns the NOTIFY status.
ReferHandler = Callable[[Call, str], int]


class Transfers:
    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        # None: we dial the target ourselves (a server asked to transfer). A client such as the
        # call simulator sets this to note the transfer instead.
        self.on_refer: ReferHandler | None = None
        self._refers_seen: set[str] = set()  # calls that already got a REFER: one per dialog

    def transfer(self, call: Call, target: str) -> None:
        """Blind transfer with REFER; the leg ends when the target answers (see ``progress``).
        ValueError (NotSipError) for a browser call, which has no dialog to REFER."""
        session = call.leg.sip().session
        call.publish(ev.TransferRequested(target=target, method="refer"))
        self.manager.act(lambda now: self.manager.ua.refer(session, target, now))

    def progress(self, call: Call, event: sip_events.SessionEvent) -> None:
        """How a REFER we sent is going: its response, then NOTIFYs about the new call."""
        if isinstance(event, sip_events.ReferProgress):
            call.publish(ev.ReferProgress(status=event.status, final=event.final))
            if event.final and 200 <= event.status < 300:
                # The transferee reached the target: our leg is done (blind transfer).
                self.manager.hangup_leg(call, EndReason.TRANSFER)
        elif isinstance(event, sip_events.ReferAccepted):
            call.publish(ev.ReferAccepted(status=event.status))
        elif isinstance(event, sip_events.ReferFailed):
            call.publish(ev.ReferFailed(status=event.status))

    def forget(self, call: Call) -> None:
        self._refers_seen.discard(call.id)

    # -- REFERs we are sent -----------------------------------------------------------------------

    def policy(self, session: InviteSession, target: object) -> tuple[int, str] | None:
        """Asked by the UA core before it answers a REFER: None lets it through (202), else 403."""
        call: Call | None = getattr(session, "app", None)
        if self.on_refer is not None:
            return None  # a client noting transfers, not dialling them
        if call is None:
            return 403, "Forbidden"
        if call.id in self._refers_seen:
            call.publish(ev.ReferDenied(reason="second_refer"))
            return 403, "One Transfer Per Call"
        self._refers_seen.add(call.id)
        uri = getattr(target, "uri", None)
        if not isinstance(uri, SipUri):
            call.publish(ev.ReferDenied(reason="not_sip"))
            return 403, "Forbidden"
        outbound = self.manager.outbound
        text = target_text(uri)
        inbound = next((t for t in self.manager.trunks.trunks if t.name == call.trunk), None)
        rules = outbound.rules_for(uri, None)
        patterns = inbound.transfer_targets if inbound is not None and call.direction is Direction.INBOUND else ()
        if not transfer_allowed(text, uri.user_decoded, patterns, rules.home_country if rules else "+1"):
            call.publish(ev.ReferDenied(reason="not_a_transfer_target", target=text))
            outbound.denied("refer_target", f"REFER to {text} is not a transfer target", call.trunk)
            return 403, "Forbidden"
        if outbound.policy is not None:
            reason, detail = outbound.policy.verdict(text, uri.user_decoded, rules)
            if reason != "ok":
                call.publish(ev.ReferDenied(reason=reason, target=text))
                outbound.denied(reason, detail, rules.name if rules else None)
                return 403, "Forbidden"
        return None

    async def handle_refer(self, call: Call, event: sip_events.ReferReceived) -> None:
        """We were asked to transfer: dial the target, report with NOTIFYs (RFC 3515 §2.4.5), then leave."""
        manager = self.manager
        session = event.session
        target = str(event.refer_to.uri)
        call.publish(ev.ReferReceived(target=target))
        if self.on_refer is not None:
            status = self.on_refer(call, target)
            manager.act(lambda now: manager.ua.notify_refer(session, status, "OK" if status < 300 else "Declined", now))
            return
        try:
            new_call = await manager.dial(target)
        except DialDenied as exc:  # a cap filled since the REFER was accepted
            call.publish(ev.ReferDenied(reason=exc.reason, target=target))
            manager.act(lambda now: manager.ua.notify_refer(session, 403, "Forbidden", now))
            return
        except (ValueError, OSError) as exc:
            log.warning("cannot dial REFER target %s: %s", target, exc)
            manager.act(lambda now: manager.ua.notify_refer(session, 503, "Service Unavailable", now))
            return
        if await new_call.answered(REFER_DIAL_TIMEOUT):
            manager.act(lambda now: manager.ua.notify_refer(session, 200, "OK", now))
            manager.hangup_leg(call, EndReason.TRANSFER)
            return
        ended = new_call.status is CallStatus.HANGUP
        manager.act(lambda now: manager.ua.notify_refer(session, 487 if ended else 408, "Request Terminated", now))
        if not ended:
            manager.hangup(new_call)
