"""SIP transactions (RFC 3261 §17, with the RFC 6026 2xx fixes), sans-IO.

The layer never reads a clock or touches a socket. The driver:

* calls :meth:`TransactionLayer.receive_request` / ``receive_response`` with
  parsed messages, the source address and ``now``;
* sends what :meth:`TransactionLayer.datagrams_to_send` returns;
* re-arms one timer at :meth:`TransactionLayer.next_deadline` and calls
  :meth:`TransactionLayer.handle_timer` when it fires;
* pops :meth:`TransactionLayer.next_event` to hand results to the UA core.

Addresses are opaque to this module apart from ``.transport`` (reliability)
and being hashable.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .address import is_reliable
from .message import Request, Response
from .via import response_destination

# RFC 3261 §17.1.1.1 / Table 4: timer base values (seconds).
T1 = 0.5  # RTT estimate
T2 = 4.0  # cap for non-INVITE request and INVITE response retransmit intervals
T4 = 5.0  # how long a message may live in the network
# RFC 3261 §17.1.1.2: Timer D is at least 32 s on unreliable transports.
TIMER_D_UNRELIABLE = 32.0
# RFC 3261 §8.1.1.7: branches from RFC 3261 elements start with this cookie.
MAGIC_COOKIE = "z9hG4bK"


class State(enum.Enum):
    TRYING = "trying"
    CALLING = "calling"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026 §7.1: INVITE answered with 2xx
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# -- events handed to the UA core ---------------------------------------------


@dataclass(slots=True)
class RequestReceived:
    """A new request for the UA core. ``transaction`` is None for ACK to a 2xx."""

    request: Request
    source: Any
    transaction: "ServerTransaction | None"


@dataclass(slots=True)
class ResponseReceived:
    response: Response
    transaction: "ClientTransaction"


@dataclass(slots=True)
class TransactionTimedOut:
    """Timer B/F (no response), H (no ACK for a non-2xx) or L-without-ACK (2xx).

    ``reason`` names the timer so the UA core can tell a dead peer (B/F) from
    a lost ACK (H, or ``no-ack`` for a 2xx, RFC 3261 §13.3.1.4).
    """

    transaction: "ServerTransaction | ClientTransaction"
    reason: str


Event = RequestReceived | ResponseReceived | TransactionTimedOut
# A §17.1.3 / §17.2.3 matching key: branch and method, plus sent-by or the RFC 2543 fallbacks.
TransactionKey = tuple[str | int | None, ...]


# -- transactions --------------------------------------------------------------


def server_key(request: Request, method: str | None = None) -> TransactionKey:
    """RFC 3261 §17.2.3 matching key for a server transaction (``method``: match that one's instead)."""
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    # RFC 2543 peers: fall back to the dialog-ish identifiers of §17.2.3.
    return ("2543", request.call_id, request.from_addr.tag, request.cseq.number, method, via.host, via.port)


def client_key(branch: str, method: str) -> TransactionKey:
    """RFC 3261 §17.1.3: branch plus CSeq method ("ACK" never has its own)."""
    return (branch, "INVITE" if method == "ACK" else method)


@dataclass(eq=False, slots=True)
class ServerTransaction:
    request: Request
    source: Any
    key: TransactionKey
    reliable: bool
    state: State
    last_response: Response | None = None
    last_wire: bytes | None = None
    response_destination: Any = None
    timers: dict[str, float] = field(default_factory=dict)
    retransmit_interval: float = T1
    # UA-core data rides along (dialog, 100rel bookkeeping...).
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200


@dataclass(eq=False, slots=True)
class ClientTransaction:
    request: Request
    destination: Any
    key: TransactionKey
    reliable: bool
    state: State
    wire: bytes
    timers: dict[str, float] = field(default_factory=dict)
    retransmit_interval: float = T1
    ack_wire: bytes | None = None
    last_response: Response | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


# (deadline, sequence, transaction, timer name) on the timer heap.
_TimerEntry = tuple[float, int, "ServerTransaction | ClientTransaction", str]


class TransactionLayer:
    """All client and server transactions of one SIP endpoint."""

    def __init__(self, *, t1: float = T1, t2: float = T2, t4: float = T4) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self._server: dict[TransactionKey, ServerTransaction] = {}
        self._client: dict[TransactionKey, ClientTransaction] = {}
        # (Call-ID, CSeq number) → INVITE server transaction awaiting the ACK to its 2xx.
        self._awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._outbox: list[tuple[bytes, Any]] = []
        self._events: deque[Event] = deque()
        self._heap: list[_TimerEntry] = []
        self._sequence = itertools.count()
        # (Call-ID, CSeq number) → INVITE server transaction that sent a non-2xx final.
        self._completed_invites: dict[tuple[str, int], ServerTransaction] = {}

    # -- driver interface -------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _arm(self, tx: "ServerTransaction | ClientTransaction", name: str, deadline: float) -> None:
        # Thousands of transactions linger in Completed/Accepted for 32 s at
        # a few hundred calls/s: a heap keeps each timer operation O(log n).
        # Entries are invalidated lazily: a popped entry counts only if the
        # transaction still holds that timer at that deadline.
        tx.timers[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._sequence), tx, name))

    def _live(self, entry: _TimerEntry) -> bool:
        deadline, _, tx, name = entry
        return tx.timers.get(name) == deadline

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            _, _, tx, name = entry
            del tx.timers[name]
            if isinstance(tx, ServerTransaction):
                self._server_timer(tx, name, now)
            else:
                self._client_timer(tx, name, now)

    @property
    def counts(self) -> tuple[int, int]:
        return len(self._server), len(self._client)

    # -- server side (RFC 3261 §17.2) -----------------------------------------

    def receive_request(self, request: Request, source: Any, now: float) -> None:
        key = server_key(request)
        tx = self._server.get(key)
        if request.method == "ACK":
            self._receive_ack(request, source, tx, now)
            return
        if tx is not None:
            # A retransmission: absorb it and repeat the last response, if any
            # (§17.2.1 Proceeding/Completed, §17.2.2, RFC 6026 §7.1 Accepted).
            if tx.last_wire is not None and tx.state is not State.CONFIRMED:
                self._outbox.append((tx.last_wire, tx.response_destination))
            return
        reliable = is_reliable(source)
        tx = ServerTransaction(
            request=request,
            source=source,
            key=key,
            reliable=reliable,
            state=State.PROCEEDING if request.method == "INVITE" else State.TRYING,
            response_destination=response_destination(request, source),
        )
        self._server[key] = tx
        self._events.append(RequestReceived(request, source, tx))

    def _receive_ack(self, ack: Request, source: Any, tx: ServerTransaction | None, now: float) -> None:
        if tx is None:
            tx = self._completed_invite_for(ack)
        if tx is not None and tx.state is State.COMPLETED:
            # §17.2.1: ACK for a non-2xx final response ends retransmissions.
            tx.state = State.CONFIRMED
            tx.timers.pop("G", None)
            tx.timers.pop("H", None)
            self._arm(tx, "I", now + (0.0 if tx.reliable else self.t4))
            return
        if tx is not None and tx.state is State.CONFIRMED:
            return  # retransmitted ACK: absorbed
        # ACK for a 2xx is its own transaction (§17.1.1.3); stop our 2xx retransmits.
        try:
            pending = self._awaiting_ack.pop((ack.call_id, ack.cseq.number), None)
        except ValueError:
            pending = None
        if pending is not None:
            pending.timers.pop("G2xx", None)
            pending.context["acked"] = True
        self._events.append(RequestReceived(ack, source, None))

    def _completed_invite_for(self, ack: Request) -> ServerTransaction | None:
        """Match an ACK that carries a fresh branch to the non-2xx it acknowledges.

        RFC 3261 §17.1.1.3 says the ACK reuses the INVITE's branch, but some
        clients send a new one; matching on Call-ID, CSeq and the response's
        To-tag (the RFC 2543 rule of §17.2.3) keeps them from looping on
        Timer G retransmissions.
        """
        try:
            candidate = self._completed_invites.get((ack.call_id, ack.cseq.number))
            if candidate is None or candidate.state is not State.COMPLETED or candidate.last_response is None:
                return None
            return candidate if candidate.last_response.to_addr.tag == ack.to_addr.tag else None
        except ValueError:
            return None

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        """Send a response within ``tx`` and run the §17.2 state machine."""
        if tx.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            return  # a final response has already been sent
        wire = response.serialize()
        tx.last_response, tx.last_wire = response, wire
        self._outbox.append((wire, tx.response_destination))
        if response.status < 200:
            if tx.state is State.TRYING:
                tx.state = State.PROCEEDING
            return
        if tx.is_invite and response.status < 300:
            # RFC 6026 §7.1: stay to absorb INVITE retransmits; we (as the TU,
            # §13.3.1.4) retransmit the 2xx until the ACK arrives.
            tx.state = State.ACCEPTED
            self._arm(tx, "L", now + 64 * self.t1)
            tx.retransmit_interval = self.t1
            self._arm(tx, "G2xx", now + self.t1)
            self._awaiting_ack[(tx.request.call_id, tx.request.cseq.number)] = tx
            return
        tx.state = State.COMPLETED
        if tx.is_invite:
            self._completed_invites[(tx.request.call_id, tx.request.cseq.number)] = tx
            if not tx.reliable:
                tx.retransmit_interval = self.t1
                self._arm(tx, "G", now + self.t1)
            self._arm(tx, "H", now + 64 * self.t1)
        else:
            self._arm(tx, "J", now + (0.0 if tx.reliable else 64 * self.t1))

    def _server_timer(self, tx: ServerTransaction, name: str, now: float) -> None:
        if name in ("G", "G2xx"):
            # Timer G: the final response was lost, send it again with backoff.
            # A 2xx is retransmitted even on TCP (§13.3.1.4: the TU does it end-to-end).
            if tx.last_wire is not None:
                self._outbox.append((tx.last_wire, tx.response_destination))
            tx.retransmit_interval = min(2 * tx.retransmit_interval, self.t2)
            self._arm(tx, name, now + tx.retransmit_interval)
        elif name == "H":
            self._terminate_server(tx)
            self._events.append(TransactionTimedOut(tx, "H"))
        elif name == "L":
            acked = tx.context.get("acked", False)
            self._terminate_server(tx)
            if not acked:
                self._events.append(TransactionTimedOut(tx, "no-ack"))
        elif name in ("I", "J"):
            self._terminate_server(tx)

    def _terminate_server(self, tx: ServerTransaction) -> None:
        tx.state = State.TERMINATED
        tx.timers.clear()
        self._server.pop(tx.key, None)
        try:
            key = (tx.request.call_id, tx.request.cseq.number)
        except ValueError:
            return
        if self._awaiting_ack.get(key) is tx:
            del self._awaiting_ack[key]
        if self._completed_invites.get(key) is tx:
            del self._completed_invites[key]

    def find_server(self, request: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2)."""
        return self._server.get(server_key(request, "INVITE"))

    # -- client side (RFC 3261 §17.1) -----------------------------------------

    def send_request(self, request: Request, destination: Any, now: float) -> ClientTransaction:
        branch = request.top_via.branch or ""
        key = client_key(branch, request.method)
        reliable = is_reliable(destination)
        wire = request.serialize()
        invite = request.method == "INVITE"
        tx = ClientTransaction(
            request=request,
            destination=destination,
            key=key,
            reliable=reliable,
            state=State.CALLING if invite else State.TRYING,
            wire=wire,
        )
        self._client[key] = tx
        self._outbox.append((wire, destination))
        if not reliable:
            self._arm(tx, "A" if invite else "E", now + self.t1)
        self._arm(tx, "B" if invite else "F", now + 64 * self.t1)
        return tx

    def send_stateless(self, response: Response, destination: Any) -> None:
        """Responses that need no transaction: 400s to garbage, §8.2.6 stateless replies."""
        self._outbox.append((response.serialize(), destination))

    def receive_response(self, response: Response, now: float) -> None:
        try:
            via = response.top_via
            key = client_key(via.branch or "", response.cseq.method)
        except ValueError:
            return
        tx = self._client.get(key)
        if tx is None:
            return  # §18.1.2: stray responses are dropped
        status = response.status
        if tx.is_invite:
            self._invite_client_response(tx, response, now)
            return
        if tx.state in (State.COMPLETED, State.TERMINATED):
            return  # retransmitted final response: absorbed in Completed (§17.1.2.2)
        tx.last_response = response
        if status < 200:
            tx.state = State.PROCEEDING
        else:
            tx.state = State.COMPLETED
            tx.timers.pop("E", None)
            tx.timers.pop("F", None)
            self._arm(tx, "K", now + (0.0 if tx.reliable else self.t4))
        self._events.append(ResponseReceived(response, tx))

    def _invite_client_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        status = response.status
        if tx.state is State.COMPLETED:
            # §17.1.1.2: a retransmitted non-2xx final → ACK again, nothing up.
            if status >= 300 and tx.ack_wire:
                self._outbox.append((tx.ack_wire, tx.destination))
            return
        if tx.state is State.TERMINATED:
            return
        tx.last_response = response
        if status < 200:
            tx.state = State.PROCEEDING
            tx.timers.pop("A", None)
            # RFC 3261 §17.1.1.2 keeps Timer B running only in Calling; a
            # provisional means the TU's own ringing timeout governs from here.
            tx.timers.pop("B", None)
        elif status < 300:
            # RFC 6026 §7.2: Accepted; 2xx retransmits go up so the TU re-ACKs.
            tx.state = State.ACCEPTED
            tx.timers.pop("A", None)
            tx.timers.pop("B", None)
            if "M" not in tx.timers:
                self._arm(tx, "M", now + 64 * self.t1)
        else:
            tx.state = State.COMPLETED
            tx.timers.pop("A", None)
            tx.timers.pop("B", None)
            tx.ack_wire = build_non2xx_ack(tx.request, response).serialize()
            self._outbox.append((tx.ack_wire, tx.destination))
            self._arm(tx, "D", now + (0.0 if tx.reliable else TIMER_D_UNRELIABLE))
        self._events.append(ResponseReceived(response, tx))

    def _client_timer(self, tx: ClientTransaction, name: str, now: float) -> None:
        if name in ("A", "E"):
            self._outbox.append((tx.wire, tx.destination))
            if name == "A":
                tx.retransmit_interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
            else:
                # Timer E caps at T2, and is T2 straight away in Proceeding (§17.1.2.2).
                tx.retransmit_interval = min(2 * tx.retransmit_interval, self.t2)
                if tx.state is State.PROCEEDING:
                    tx.retransmit_interval = self.t2
            self._arm(tx, name, now + tx.retransmit_interval)
        elif name in ("B", "F"):
            self._terminate_client(tx)
            self._events.append(TransactionTimedOut(tx, name))
        elif name in ("D", "K", "M"):
            self._terminate_client(tx)

    def _terminate_client(self, tx: ClientTransaction) -> None:
        tx.state = State.TERMINATED
        tx.timers.clear()
        self._client.pop(tx.key, None)


def request_on_invite_branch(method: str, invite: Request, to: str) -> Request:
    """A CANCEL (RFC 3261 §9.1) or a 3xx–6xx ACK (§17.1.1.3): the INVITE's top Via (its branch),
    Request-URI, Route, From, Call-ID and CSeq number, with ``method`` and the given To."""
    request = Request(method=method, uri=invite.uri)
    request.headers.add("Via", invite.headers.get_all("Via")[0])
    for value in invite.headers.get_all("Route"):
        request.headers.add("Route", value)
    request.headers.add("Max-Forwards", "70")
    request.headers.add("From", invite.headers.get("From") or "")
    request.headers.add("To", to)
    request.headers.add("Call-ID", invite.call_id)
    request.headers.add("CSeq", f"{invite.cseq.number} {method}")
    return request


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK for a 3xx–6xx reuses the INVITE's branch and takes the response's To."""
    return request_on_invite_branch("ACK", invite, response.headers.get("To") or "")


__all__ = [
    "ClientTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "State",
    "TransactionLayer",
    "TransactionTimedOut",
    "build_non2xx_ack",
]
