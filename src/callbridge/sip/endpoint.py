"""The thin asyncio driver: sockets and one timer around the sans-IO UA core.

Like aioquic's asyncio layer, this only moves bytes and time: datagrams go
into :meth:`UserAgent.receive`, whatever the core wants sent is sent, one
``loop.call_at`` is re-armed to the core's next deadline, and the core's events
are handed on: session events to the owner's ``on_event``, registration status
changes to ``on_registration_event`` (the trunk registrations' manager).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from .events import SessionEvent
from .registration import RegistrationEvent
from .transport import SipTransports
from .useragent import UserAgent

log = logging.getLogger("callbridge.sip")


def ignore_registration_event(event: RegistrationEvent) -> None:
    """The default: nobody registers, or nobody listens."""


class SipEndpoint:
    def __init__(self, ua: UserAgent, on_event: Callable[[SessionEvent], None]) -> None:
        self.ua = ua
        self.on_event = on_event
        self.on_registration_event: Callable[[RegistrationEvent], None] = ignore_registration_event
        self.transports = SipTransports(on_datagram=self._on_datagram)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False
        self._again = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str, *, udp_port: int | None = None, tcp_port: int | None = None,
                    tls_port: int | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transports.start(host, udp_port=udp_port, tcp_port=tcp_port, tls_port=tls_port,
                                    ssl_context=ssl_context)
        # Advertise the ports we really bound (they may have been 0 = any).
        self.ua.config.ports = {t: self.transports.local_address(t).port for t in self.transports.transports}

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()

    def now(self) -> float:
        return (self._loop or asyncio.get_event_loop()).time()

    def _on_datagram(self, data: bytes, source: Any) -> None:
        self.ua.receive(data, source, self.now())
        self.flush()

    def flush(self) -> None:
        """Send what the core produced, dispatch its events, re-arm the timer.

        Event handlers call back into the core (answer, bye...), which makes
        more output; the loop runs until the core is quiet, without recursion.
        """
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                for data, destination in self.ua.datagrams_to_send():
                    self.transports.send(data, destination)
                while (event := self.ua.next_event()) is not None:
                    self._dispatch(event)
                if not self._again:
                    break
            self._arm_timer()
        finally:
            self._flushing = False

    def _dispatch(self, event: SessionEvent | RegistrationEvent) -> None:
        try:
            if isinstance(event, RegistrationEvent):
                self.on_registration_event(event)
            else:
                self.on_event(event)
        except Exception:  # noqa: BLE001 - the owner's bug must not stop signalling
            log.exception("event handler failed for %s", type(event).__name__)

    def _arm_timer(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.ua.handle_timer(self.now())
        except Exception:  # noqa: BLE001 - a timer bug must not stop the next timers
            log.exception("SIP timer handling failed")
        self.flush()
