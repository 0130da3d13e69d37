"""SIP requests and responses (RFC 3261 §7) with typed accessors and serialisation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .grammar import WS, is_token, parse_uint
from .headers import Headers
from .uri import NameAddr, Uri, Via, parse_name_addr, parse_name_addr_list, parse_via_list

SIP_VERSION = "SIP/2.0"

# RFC 3261 §21 and the IANA "Response Codes" registry: default reason phrases.
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 433: "Anonymity Disallowed", 436: "Bad Identity-Info",
    437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
    607: "Unwanted", 608: "Rejected",
}


@dataclass(slots=True, frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# RFC 3261 §8.1.1.5 / §20.16: the sequence number is a 32-bit unsigned integer.
MAX_CSEQ = 2**32 - 1
# RFC 3261 §20.22: Max-Forwards is 0-255. §20.19: Expires is 32-bit.
MAX_MAX_FORWARDS = 255
MAX_EXPIRES = 2**32 - 1

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ_SYNTAX = re.compile(r"([0-9]+)[ \t]+(\S+)")


def parse_cseq(value: str) -> CSeq:
    match = CSEQ_SYNTAX.fullmatch(value.strip(WS))
    if match is None or not is_token(match.group(2)):
        raise SipParseError(f"bad CSeq: {value[:60]!r}")
    return CSeq(parse_uint(match.group(1), "CSeq number", MAX_CSEQ), match.group(2))


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
    def max_forwards(self) -> int | None:
        """RFC 3261 §20.22; ``None`` when absent (RFC 2543 peers, RFC 4475 inv2543)."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", MAX_MAX_FORWARDS)

    @property
    def expires(self) -> int | None:
        """RFC 3261 §20.19 delta-seconds; raises for junk or > 2**32-1.

        Parsed only on use: RFC 4475 scalar02 lets a registrar treat an
        out-of-range value as the default instead of refusing the request.
        """
        value = self.headers.get("Expires")
        return None if value is None else parse_uint(value, "Expires", MAX_EXPIRES)

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
        return value.split(";")[0].strip(WS).lower() if value else None

    def serialize(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        if any("\r" in line or "\n" in line for line in lines):
            # A value built by application code must never smuggle in an
            # extra header line (CRLF injection).
            raise ValueError("CR or LF inside a header field")
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
    """Build a response that mirrors the request's dialog-identifying headers.

    Every Via is copied in order (RFC 3261 §8.2.6.2). From, To, Call-ID and
    CSeq are single-valued, so only their first instance is copied: a 400 for
    a request that (illegally) repeats them, such as RFC 4475 multi01, is
    still a well-formed response. Values are copied verbatim, which also lets
    a :class:`~callbridge.sip.parser.PartialRequest` be answered.
    """
    response = Response(status=status, reason=reason or REASON_PHRASES.get(status, "Unknown"))
    for name in _COPIED_TO_RESPONSE:
        values = request.headers.get_all(name)
        if name != "Via":
            values = values[:1]
        for value in values:
            if name == "To" and to_tag and not _has_tag(value):
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


def _has_tag(value: str) -> bool:
    try:
        return "tag" in parse_name_addr(value).params
    except SipParseError:
        # A To we cannot parse (answering a PartialRequest): never append to it.
        return True
