"""Bytes → ``Request``/``Response`` (RFC 3261 §7, §25), strict where it matters.

The parser raises only :class:`SipParseError`. When a broken message is
recognisably a request (its start line reads ``token SP ... SP SIP/x.y``), the
error is a :class:`PartialRequest` carrying ``partial``: the request with every
header line that could be split, so the transport can still answer 400 (or 505)
to the sender (RFC 3261 §21.4.1) when the Via/From/To/Call-ID/CSeq it needs are
usable — see :attr:`PartialRequest.respondable`. Broken responses are plain
:class:`SipParseError`: they are dropped and logged, never answered.

What is checked here is what every element must check before a transaction
can be found (RFC 4475 §3.1): the start line, header-line syntax, framing
(Content-Length), the presence and syntax of To/From/CSeq/Call-ID/Via, the
uniqueness of single-valued headers and the CSeq method. Everything else is
parsed on use by the accessors on :class:`~callbridge.sip.message.Request`,
so an odd Date or Expires only matters to code that reads it (RFC 4475
baddate, scalar02).
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .grammar import DIGITS, MAX_DIGITS, WS, is_token, parse_uint, split_quoted
from .headers import Headers
from .message import CSEQ_SYNTAX, MAX_MAX_FORWARDS, SIP_VERSION, Message, Request, Response, parse_cseq
from .uri import SipUri, parse_name_addr, parse_uri, parse_via, parse_via_list

# RFC 3261 §8.1.1: every request carries these, responses too (§8.2.6.2).
# Max-Forwards is required of RFC 3261 senders but is *not* enforced here:
# RFC 2543 peers omit it and RFC 4475 §3.4.1 (inv2543) says to accept them.
REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
REQUIRED_RESPONSE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
# Headers whose grammar allows exactly one value (RFC 3261 §20).
SINGLE_VALUED = ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length", "Content-Type", "Expires")
# Largest Content-Length we ever accept; bigger claims are hostile or broken.
MAX_CONTENT_LENGTH = 1 << 20
MAX_STATUS, MIN_STATUS = 699, 100
# Header lines per message. Asterisk's chan_sip read at most 64 (SIP_MAX_HEADERS) for years and
# real traffic fits; 256 leaves room for long proxy chains (MAX_VIAS Via lines plus the rest).
# Beyond it the message is answered 513 Message Too Large (RFC 3261 §21.5.7) or dropped:
# thousands of tiny headers cost the parser and every later header lookup linear time each.
MAX_HEADER_LINES = 256
# Via entries per message: each proxy adds one and Max-Forwards starts at 70 (RFC 3261 §8.1.1.6,
# §16.6 step 3), so more than 70 + the originator's cannot be a legitimate path. 483 Too Many
# Hops (RFC 3261 §21.4.20).
MAX_VIAS = 71

# The blank line that ends the header section: CRLF CRLF, tolerating bare-LF
# senders (RFC 3261 §7.5 asks for CRLF but robust receivers accept LF).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (RFC 3261 §25.1, case-insensitive).
_SIP_VERSION = re.compile(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+")
# Call-ID = word [ "@" word ]: we do not police the word alphabet (real UAs use
# "=" and other non-word characters), only that it is one run of visible text.
_CALL_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")


class PartialRequest(SipParseError):
    """A request whose start line was recognised but which is otherwise broken."""

    def __init__(self, reason: str, status: int, partial: Request) -> None:
        super().__init__(reason, status)
        self.partial = partial

    @property
    def respondable(self) -> bool:
        """Whether ``make_response(partial, status)`` can reach and match the client.

        A response is routed by the top Via (RFC 3261 §18.2.2) and matched by
        its branch and the CSeq method (§17.1.3); From, To and Call-ID are only
        echoed, so they need to be present but not well-formed, and the CSeq
        needs its syntax but not an in-range number (RFC 4475 scalar02 asks
        for a 400). When this is False the request is dropped and logged
        (RFC 4475 insuf, badinv01).
        """
        request = self.partial
        headers = request.headers
        if request.method == "ACK":
            return False  # RFC 3261 §17: an ACK is never answered
        if not all(headers.get(name) for name in ("From", "To", "Call-ID")):
            return False
        try:
            vias = headers.get_all("Via")
            if not vias:
                return False
            cseq = headers.get_all("CSeq")
            match = CSEQ_SYNTAX.fullmatch(cseq[0].strip(WS)) if cseq else None
            if match is None or not is_token(match.group(2)):
                return False
            parse_via(split_quoted(vias[0], ",")[0])
        except SipParseError:
            return False
        return True


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line that ends the header section (RFC 3261 §7)."""
    match = _HEAD_END.search(data)
    if match is None:
        raise SipParseError("no empty line after the headers")
    return data[: match.start()], data[match.end() :]


def _unfold(head: str) -> list[str]:
    """Split header lines and undo line folding (RFC 3261 §7.3.1).

    A line starting with SP or HT continues the previous one; the fold and
    the white space around it become a single SP (RFC 3261 §7.3.1).
    """
    lines: list[str] = []
    for raw in _LINE_END.split(head):
        # Only header fields fold: white space right after the start line is
        # kept as a (malformed) line of its own.
        if raw[:1] in (" ", "\t") and len(lines) > 1:
            lines[-1] = lines[-1].rstrip(WS) + " " + raw.strip(WS)
        else:
            lines.append(raw)
    return lines


# The headers a response is routed and matched by, full and compact names (RFC 3261 §7.3.3).
_RESPONSE_HEADERS = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})


def _routes(line: str) -> bool:
    return line.partition(":")[0].strip(WS).lower() in _RESPONSE_HEADERS


def parse_message(data: bytes, *, stream: bool = False) -> Message:
    """Parse one message. ``stream`` means the bytes were framed by Content-Length."""
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives).
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, body = split_head(data)
    decode_error = None
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 3261 §7.3.1: header text is UTF-8. Keep going with replacement
        # characters only so that a request can still be answered 400.
        head = head_bytes.decode("utf-8", errors="replace")
        decode_error = "headers are not valid UTF-8"
    lines = _unfold(head)
    message, start_error = _parse_start_line(lines[0])
    header_error: SipParseError | None
    if len(lines) > MAX_HEADER_LINES + 1:
        # Keep what a 513 needs to reach the sender (RFC 3261 §8.2.6.2) from the lines past the cap.
        kept = lines[1 : MAX_HEADER_LINES + 1] + [line for line in lines[MAX_HEADER_LINES + 1 :] if _routes(line)]
        _fill_headers(message, kept)
        header_error = SipParseError(f"more than {MAX_HEADER_LINES} header lines", 513)
    else:
        header_error = _fill_headers(message, lines[1:])
    error = start_error or (SipParseError(decode_error) if decode_error else None) or header_error
    try:
        if error is not None:
            raise error
        message.body = _frame_body(message.headers, body, stream=stream)
        _validate(message)
    except SipParseError as exc:
        if isinstance(message, Request):
            raise PartialRequest(exc.reason, exc.status, message) from None
        raise
    return message


def _parse_start_line(line: str) -> tuple[Message, SipParseError | None]:
    """The start line, plus the error that makes it unusable (if any).

    Returns a message to collect headers into even when the line is broken
    but recognisably a request, so the caller can raise :class:`PartialRequest`.
    """
    if line.startswith("SIP/"):
        if "\r" in line:
            raise SipParseError("bare CR in the status line")
        return _parse_status_line(line), None
    # Recognisably a request: Method SP ... SP SIP-Version.
    words = line.split(" ")
    method = words[0]
    tail = line.rstrip(WS).rpartition(" ")[2]
    if not is_token(method) or not tail.upper().startswith("SIP/") or len(words) < 3:
        raise SipParseError(f"malformed start line: {line[:80]!r}")
    request = Request(method=method, uri=None)
    # RFC 3261 §7.1 / §25.1: Method SP Request-URI SP SIP-Version, exactly one
    # SP each and nothing after the version (RFC 4475 lwsruri, lwsstart, trws).
    if len(words) != 3 or not all(words) or "\r" in line:
        return request, SipParseError(f"malformed request line: {line[:80]!r}")
    uri_text, version = words[1], words[2]
    if version.upper() != SIP_VERSION:
        if _SIP_VERSION.fullmatch(version) is None:
            return request, SipParseError(f"malformed SIP version {version[:20]!r}")
        # RFC 3261 §8.2.1 (implied by §21.5.6) / RFC 4475 §3.1.2.16 badvers.
        return request, SipParseError(f"unsupported SIP version {version[:20]!r}", 505)
    try:
        uri = parse_uri(uri_text)
    except SipParseError as exc:
        # RFC 4475 ltgtruri: a Request-URI in <> is a 400.
        return request, SipParseError(f"bad Request-URI: {exc.reason}")
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI
        # (RFC 4475 escruri: rejecting with 400 is acceptable).
        return request, SipParseError("headers in the Request-URI")
    request.uri = uri
    return request, None


def _parse_status_line(line: str) -> Response:
    # RFC 3261 §7.2: SIP-Version SP Status-Code SP Reason-Phrase (reason may be empty).
    version, _, rest = line.partition(" ")
    if version != SIP_VERSION:
        raise SipParseError(f"unsupported version: {version[:20]!r}")
    code, _, reason = rest.partition(" ")
    # RFC 4475 bigcode: a code outside 100-699 means the response is dropped.
    if len(code) != 3 or DIGITS.fullmatch(code) is None or not MIN_STATUS <= int(code) <= MAX_STATUS:
        raise SipParseError(f"bad status code: {code[:20]!r}")
    return Response(status=int(code), reason=reason.strip(WS))


def _fill_headers(message: Message, lines: list[str]) -> SipParseError | None:
    """Add every well-formed header line; return the first error, if any."""
    headers = Headers()
    error = None
    for line in lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(WS)  # RFC 3261 §25.1 HCOLON allows WS before ':'
        if not colon or not is_token(name) or "\r" in value:
            # A CR is never legal outside a line end, not even as a
            # quoted-pair (RFC 3261 §25.1); such a line is not kept, so it
            # can never be echoed into a response.
            error = error or SipParseError(f"malformed header line: {line[:60]!r}")
            continue
        headers.add(name, value.strip(WS))
    message.headers = headers
    return error


def _frame_body(headers: Headers, body: bytes, *, stream: bool) -> bytes:
    raw = headers.get_all("Content-Length")
    if not raw:
        if stream:
            raise SipParseError("Content-Length is required on stream transports")
        return body  # RFC 3261 §18.3: on UDP the datagram ends the body
    if len(raw) > 1:
        # RFC 4475 mcl01: there is no way to know which one frames the body.
        raise SipParseError("more than one Content-Length")
    text = raw[0]
    if DIGITS.fullmatch(text) is None:
        # RFC 4475 ncl: negative or non-numeric.
        raise SipParseError(f"bad Content-Length: {text[:20]!r}")
    stripped = text.lstrip("0") or "0"
    length = int(stripped) if len(stripped) <= MAX_DIGITS else MAX_CONTENT_LENGTH + 1
    if length > len(body):
        # RFC 3261 §18.3 / RFC 4475 clerr: a datagram shorter than its
        # Content-Length is answered 400.
        raise SipParseError(f"Content-Length {text[:20]} exceeds the {len(body)} body bytes")
    if length > MAX_CONTENT_LENGTH:
        raise SipParseError("Content-Length too large", 413)
    # Extra bytes after the declared body are discarded (§18.3, RFC 4475 dblreq).
    return body[:length]


def _validate(message: Message) -> None:
    headers = message.headers
    counts: dict[str, int] = {}
    for name, _ in headers:
        counts[name] = counts.get(name, 0) + 1
    required = REQUIRED_REQUEST_HEADERS if isinstance(message, Request) else REQUIRED_RESPONSE_HEADERS
    missing = [name for name in required if name not in counts]
    if missing:
        raise SipParseError(f"missing {', '.join(missing)}")
    for name in SINGLE_VALUED:
        if counts.get(name, 0) > 1:
            # RFC 4475 multi01: which dialog would it belong to?
            raise SipParseError(f"more than one {name}")
    # Parse the headers every transaction depends on, so errors surface here.
    call_id = headers.get("Call-ID") or ""
    if _CALL_ID.fullmatch(call_id) is None:
        raise SipParseError(f"bad Call-ID: {call_id[:60]!r}")
    cseq = parse_cseq(headers.get("CSeq") or "")
    parse_name_addr(headers.get("To") or "")
    parse_name_addr(headers.get("From") or "")
    via_lines = headers.get_all("Via")
    if len(via_lines) > MAX_VIAS:  # before parsing them all
        raise SipParseError(f"more than {MAX_VIAS} Via entries", 483)
    if sum(len(parse_via_list(raw)) for raw in via_lines) > MAX_VIAS:
        raise SipParseError(f"more than {MAX_VIAS} Via entries", 483)
    if isinstance(message, Request):
        # RFC 3261 §8.1.1.5: the CSeq method matches the request method
        # (RFC 4475 mismatch01/02; 400 rather than 501 keeps transaction
        # matching unambiguous).
        if cseq.method != message.method:
            raise SipParseError("CSeq method does not match the request method")
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None:
            # RFC 3261 §20.22: 0-255 (RFC 4475 scalar02 has 300).
            parse_uint(max_forwards, "Max-Forwards", MAX_MAX_FORWARDS)
