"""Hand-written SIP messages and a harness that drives the UA core with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.sip.address import Address
from callbridge.sip.parser import parse_message
from callbridge.sip.useragent import UserAgent, UserAgentConfig

PEER = Address("127.0.0.1", 5070, "udp")

SDP_OFFER = (
    "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\na=sendrecv\r\n"
)


def invite(
    *,
    branch: str = "z9hG4bK-inv1",
    call_id: str = "call-1@peer",
    cseq: int = 1,
    method: str = "INVITE",
    to_tag: str | None = None,
    extra: str = "",
    body: str = SDP_OFFER,
    via_port: int = 5070,
) -> bytes:
    to = "<sip:demo@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:demo@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch={branch};rport\r\n"
        f"From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=alice-tag\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}{content}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


@dataclass
class Harness:
    """A UA core with a fake clock that records what it sends and emits."""

    ua: UserAgent = field(default_factory=lambda: UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060})))
    now: float = 0.0
    sent: list = field(default_factory=list)
    events: list = field(default_factory=list)

    def feed(self, data: bytes, source: Address = PEER) -> None:
        self.ua.receive(data, source, self.now)
        self.pump()

    def pump(self) -> None:
        for wire, destination in self.ua.datagrams_to_send():
            self.sent.append((parse_message(wire), destination))
        while (event := self.ua.next_event()) is not None:
            self.events.append(event)

    def advance(self, seconds: float) -> None:
        """Move the fake clock, firing every deadline on the way in order."""
        target = self.now + seconds
        while (deadline := self.ua.next_deadline()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            self.pump()
        self.now = target

    def take(self):
        sent, self.sent = self.sent, []
        return [message for message, _ in sent]

    def statuses(self) -> list[int]:
        return [getattr(m, "status", None) or m.method for m in self.take()]
