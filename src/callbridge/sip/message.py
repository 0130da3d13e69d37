"""SIP requests and responses (RFC 3261 §7) with typed accessors and serialisation."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SipParseError
from .headers import Headers
from .uri import NameAddr, Uri, Via, parse_name_addr, parse_name_addr_list, parse_via_list

SIP_VERSION = "SIP/2.0"

# RFC 3261 §21: default reason phrases for the codes this stack sends.
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}


@dataclass(slots=True, frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# RFC 3261 §8.1.1.5: the sequence number must be < 2**31.
MAX_CSEQ = 2**31 - 1


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise SipParseError(f"bad CSeq: {value!r}")
    number = int(parts[0])
    if number > MAX_CSEQ:
        raise SipParseError(f"CSeq number out of range: {number}")
    return CSeq(number, parts[1])


@dataclass(slots=True)
class _MessageBase:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # -- typed accessors; each parses on demand so a broken optional header
    #    only matters to the code that reads it.
    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if not value:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        return parse_cseq(value)

    @property
    def from_addr(self) -> NameAddr:
        return _required_addr(self.headers, "From")

    @property
    def to_addr(self) -> NameAddr:
        return _required_addr(self.headers, "To")

    @property
    def vias(self) -> list[Via]:
        vias: list[Via] = []
        for raw in self.headers.get_all("Via"):
            vias.extend(parse_via_list(raw))
        return vias

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via")
        return vias[0]

    @property
    def contacts(self) -> list[NameAddr]:
        values = [v for v in self.headers.get_list("Contact") if v != "*"]
        return [parse_name_addr(v) for v in values]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [a for raw in self.headers.get_all("Record-Route") for a in parse_name_addr_list(raw)]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def serialize(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        # RFC 3261 §18.3: always send Content-Length; it is mandatory on streams.
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def _required_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name}")
    return parse_name_addr(value)


@dataclass(slots=True)
class Request(_MessageBase):
    method: str = ""
    uri: Uri | None = None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclass(slots=True)
class Response(_MessageBase):
    status: int = 200
    reason: str = ""

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


Message = Request | Response


# RFC 3261 §8.2.6.2 / §12.1.1: headers a UAS copies from request to response.
_COPIED_TO_RESPONSE = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """Build a response that mirrors the request's dialog-identifying headers."""
    response = Response(status=status, reason=reason or REASON_PHRASES.get(status, "Unknown"))
    for name in _COPIED_TO_RESPONSE:
        for value in request.headers.get_all(name):
            if name == "To" and to_tag and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            response.headers.add(name, value)
    # RFC 3261 §12.1.1: Record-Route is copied into 2xx/1xx that create dialogs.
    if request.method in ("INVITE", "SUBSCRIBE", "REFER") and 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
    for name, value in headers or ():
        response.headers.add(name, value)
    response.body = body
    return response
