"""Bytes → ``Request``/``Response`` (RFC 3261 §7, §25), strict where it matters.

The parser raises only :class:`SipParseError`. When a broken message is
recognisably a request, the error carries ``partial``: the request with its
raw headers, so the transport can still answer 400 to the sender (RFC 3261
§21.4.1) when the Via/From/To/Call-ID/CSeq it needs are usable.
"""

from __future__ import annotations

from .errors import SipParseError
from .grammar import WS, is_token
from .headers import Headers
from .message import SIP_VERSION, Message, Request, Response, parse_cseq
from .uri import parse_name_addr, parse_uri, parse_via_list

# RFC 3261 §8.1.1: every request carries these; responses all but Max-Forwards.
REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Via")
REQUIRED_RESPONSE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
# Headers whose grammar allows exactly one value (RFC 3261 §20).
SINGLE_VALUED = ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length", "Content-Type", "Expires")
MAX_MAX_FORWARDS = 255
# Largest Content-Length we ever accept; bigger claims are hostile or broken.
MAX_CONTENT_LENGTH = 1 << 20
MAX_STATUS, MIN_STATUS = 699, 100


class PartialRequest(SipParseError):
    """A request whose start line parsed but whose remainder is broken."""

    def __init__(self, reason: str, status: int, partial: Request) -> None:
        super().__init__(reason, status)
        self.partial = partial


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line that ends the header section (RFC 3261 §7)."""
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :]
    idx = data.find(b"\n\n")  # tolerate bare-LF senders (RFC 3261 §7.3.1 leniency)
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    raise SipParseError("no empty line after the headers")


def _unfold(head: str) -> list[str]:
    """Split header lines and undo line folding (RFC 3261 §7.3.1)."""
    lines: list[str] = []
    for raw in head.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip(WS) + " " + raw.strip(WS)
        else:
            lines.append(raw)
    return lines


def parse_message(data: bytes, *, stream: bool = False) -> Message:
    """Parse one message. ``stream`` means the bytes were framed by Content-Length."""
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives).
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, body = split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not valid UTF-8") from exc
    lines = _unfold(head)
    start, header_lines = lines[0], lines[1:]
    message = _parse_start_line(start)
    try:
        _fill_headers(message, header_lines)
        message.body = _frame_body(message.headers, body, stream=stream)
        _validate(message)
    except SipParseError as exc:
        if isinstance(message, Request):
            raise PartialRequest(exc.reason, exc.status, message) from None
        raise
    return message


def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        return _parse_status_line(line)
    # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces only.
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line: {line!r}")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method: {method!r}")
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            # RFC 3261 §8.2.5 (implied) / RFC 4475 §3.1.2.15: unsupported version.
            raise PartialRequest(f"unsupported version {version}", 505, Request(method=method, uri=None))
        raise SipParseError(f"malformed request line: {line!r}")
    try:
        uri = parse_uri(uri_text)
    except SipParseError as exc:
        raise PartialRequest(f"bad Request-URI: {exc.reason}", 400, Request(method=method, uri=None)) from None
    return Request(method=method, uri=uri)


def _parse_status_line(line: str) -> Response:
    # RFC 3261 §7.2: SIP-Version SP Status-Code SP Reason-Phrase (reason may be empty).
    version, _, rest = line.partition(" ")
    if version != SIP_VERSION:
        raise SipParseError(f"unsupported version: {version!r}")
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isdigit() or not MIN_STATUS <= int(code) <= MAX_STATUS:
        raise SipParseError(f"bad status code: {code!r}")
    return Response(status=int(code), reason=reason.strip(WS))


def _fill_headers(message: Message, lines: list[str]) -> None:
    headers = Headers()
    for line in lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(WS)  # RFC 3261 §25.1 HCOLON allows WS before ':'
        if not colon or not is_token(name):
            raise SipParseError(f"malformed header line: {line[:60]!r}")
        headers.add(name, value.strip(WS))
    message.headers = headers


def _frame_body(headers: Headers, body: bytes, *, stream: bool) -> bytes:
    raw = headers.get_all("Content-Length")
    if not raw:
        if stream:
            raise SipParseError("Content-Length is required on stream transports")
        return body  # RFC 3261 §18.3: on UDP the datagram ends the body
    if len(raw) > 1:
        raise SipParseError("more than one Content-Length")
    text = raw[0]
    if not text.isdigit():
        raise SipParseError(f"bad Content-Length: {text!r}")
    length = int(text)
    if length > MAX_CONTENT_LENGTH:
        raise SipParseError("Content-Length too large", 413)
    if length > len(body):
        # RFC 3261 §18.3: a datagram shorter than its Content-Length is broken.
        raise SipParseError(f"Content-Length {length} exceeds the {len(body)} body bytes")
    # Extra bytes after the declared body are discarded (§18.3).
    return body[:length]


def _validate(message: Message) -> None:
    headers = message.headers
    required = REQUIRED_REQUEST_HEADERS if isinstance(message, Request) else REQUIRED_RESPONSE_HEADERS
    missing = [name for name in required if name not in headers]
    if missing:
        raise SipParseError(f"missing {', '.join(missing)}")
    for name in SINGLE_VALUED:
        if len(headers.get_all(name)) > 1:
            raise SipParseError(f"more than one {name}")
    # Parse the headers every transaction depends on, so errors surface here.
    message.cseq  # noqa: B018 - validates
    parse_name_addr(headers.get("To") or "")
    parse_name_addr(headers.get("From") or "")
    for raw in headers.get_all("Via"):
        parse_via_list(raw)
    if isinstance(message, Request):
        cseq = parse_cseq(headers.get("CSeq") or "")
        # RFC 3261 §8.1.1.5: CSeq method must match the request method.
        if cseq.method != message.method:
            raise SipParseError("CSeq method does not match the request method")
        max_forwards = headers.get("Max-Forwards") or ""
        if not max_forwards.isdigit() or int(max_forwards) > MAX_MAX_FORWARDS:
            raise SipParseError(f"bad Max-Forwards: {max_forwards!r}")
    expires = headers.get("Expires")
    if expires is not None and (not expires.isdigit() or int(expires) > 2**32 - 1):
        raise SipParseError(f"bad Expires: {expires!r}")
