"""The outbound registrations (RFC 3261 §10) the UA keeps alive, each REGISTER in its own client transaction.

A :class:`~callbridge.sip.registration.Registration` decides what to send and
when; this puts its REGISTERs on the wire (adding Via, Max-Forwards and our
capabilities), routes the answers and timeouts back, and moves its status
changes into the UA's event queue, so they come out of ``UserAgent.next_event()``
in order with the session events.
"""

from __future__ import annotations

from ..address import address_for_uri
from ..message import Response
from ..registration import Registration
from ..transaction import ClientTransaction, TransactionTimedOut
from .state import UaState


class Registrations:
    def __init__(self, state: UaState) -> None:
        self._state = state
        self.registrations: list[Registration] = []

    def register(self, registration: Registration, now: float) -> None:
        """Start keeping ``registration`` bound; its REGISTERs and their answers flow through here."""
        if registration not in self.registrations:
            self.registrations.append(registration)
        registration.start(now)
        self._drive(registration, now)

    def unregister(self, registration: Registration, now: float) -> None:
        """Remove the binding (expires=0); the registration stays listed with its final status."""
        registration.unregister(now)
        self._drive(registration, now)

    def on_response(self, response: Response, tx: ClientTransaction, now: float) -> bool:
        """Hand a response to the registration whose REGISTER it answers; False if it is not one."""
        registration: Registration | None = tx.context.get("registration")
        if registration is None:
            return False
        registration.on_response(response, now)
        self._drive(registration, now)
        return True

    def on_timeout(self, event: TransactionTimedOut, now: float) -> bool:
        registration: Registration | None = event.transaction.context.get("registration")
        if registration is None:
            return False
        registration.on_timeout(event.transaction.request, now)
        self._drive(registration, now)
        return True

    # One registration per trunk that asks for it: a handful, so a scan is cheaper than a heap.
    def next_deadline(self) -> float | None:
        deadlines = [d for r in self.registrations if (d := r.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for registration in list(self.registrations):
            registration.handle_timer(now)
            self._drive(registration, now)

    def _drive(self, registration: Registration, now: float) -> None:
        """Send what the registration wants sent and pass on what it has to say."""
        state = self._state
        binding = registration.binding
        destination = binding.destination or address_for_uri(binding.registrar)
        for request in registration.requests_to_send():
            request.headers.prepend("Max-Forwards", "70")
            request.headers.prepend("Via", str(state.local_via(destination.transport)))
            for name, value in state.common_headers():
                request.headers.add(name, value)
            tx = state.transactions.send_request(request, destination, now)
            tx.context["registration"] = registration
        while (event := registration.next_event()) is not None:
            state.emit(event)
