"""Property tests: whatever bytes arrive, the parser only ever raises SipParseError.

Inputs come from (a) random bytes, (b) mutations of the RFC 4475 messages and
a typical INVITE, and (c) header values drawn from SIP-ish alphabets. On every
message that parses, the typed accessors are exercised too, and the message
must survive serialize → parse unchanged. Partial requests that claim to be
respondable must yield a serialisable response. A last property builds
well-formed requests from parts and checks they round-trip field by field.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.sip.errors import SipParseError
from callbridge.sip.framing import StreamFramer
from callbridge.sip.message import CSeq, Request, Response, make_response
from callbridge.sip.parser import PartialRequest, parse_message
from callbridge.sip.uri import NameAddr, SipUri, Via

from .test_sip_parser import TYPICAL_INVITE
from .test_sip_torture import MESSAGES

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [TYPICAL_INVITE, *MESSAGES.values()]


def _fields(msg: Request | Response) -> tuple:
    return (msg.start_line(), [h for h in msg.headers if h[0] != "Content-Length"], msg.body)


def _touch(msg: Request | Response) -> None:
    """Call every accessor; each may only fail with SipParseError."""
    accessors = (
        "call_id", "cseq", "from_addr", "to_addr", "vias", "top_via", "contacts",
        "record_routes", "max_forwards", "expires", "content_type",
    )
    for name in accessors:
        try:
            getattr(msg, name)
        except SipParseError:
            pass
    for header in ("Via", "Contact", "Route", "Record-Route", "Supported", "Require", "Allow", "Accept"):
        try:
            msg.headers.get_list(header)
            msg.headers.get_tokens(header)
        except SipParseError:
            pass
    try:
        msg.top_via.has_magic_cookie  # noqa: B018
    except SipParseError:
        pass


def exercise(data: bytes) -> None:
    for stream in (False, True):
        try:
            msg = parse_message(data, stream=stream)
        except PartialRequest as err:
            assert 400 <= err.status <= 599
            assert isinstance(err.partial, Request)
            if err.respondable:
                # Answering a broken request must never blow up.
                response = make_response(err.partial, err.status, to_tag="t1")
                assert response.serialize().startswith(f"SIP/2.0 {err.status} ".encode())
            continue
        except SipParseError as err:
            assert isinstance(err.reason, str) and isinstance(err.status, int)
            continue
        _touch(msg)
        wire = msg.serialize()
        again = parse_message(wire, stream=True)
        assert _fields(again) == _fields(msg)


def feed_in_chunks(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    out: list[bytes] = []
    try:
        for start, end in zip(points, points[1:], strict=False):
            out += framer.feed(data[start:end])
    except SipParseError:
        return
    # Whatever came out is the input minus skipped CRLF keep-alives.
    assert sum(map(len, out)) + framer.buffered <= len(data)
    for message in out:
        assert message in data
        exercise(message)


# -- (a) random bytes -------------------------------------------------------------

_PREFIXES = [b"", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"\r\n\r\n", b"OPTIONS sip:x SIP/2.0\r\nVia: "]


@SETTINGS
@given(st.sampled_from(_PREFIXES), st.binary(max_size=600))
def test_random_bytes(prefix, data):
    exercise(prefix + data)
    exercise(prefix + data + b"\r\n\r\n")


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_random_bytes_into_the_framer(data, cuts):
    feed_in_chunks(data + b"\r\nl: 3\r\n\r\nabc", cuts)


# -- (b) mutated valid messages -------------------------------------------------------

_INTERESTING = [
    b";", b",", b"<", b">", b'"', b":", b"@", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ", b"\x00",
    b"%", b"%0", b"[", b"]", b"\\", b"=", b"?", b"/", b"0", b"9" * 30, b"\xff", b"\xc3", b"\xe2\x80\xa8",
    b"\r\n\r\n", b"SIP/2.0", b"z9hG4bK", b"Content-Length: 9", b"l: -1", b"\xd9\xa3",
    b"\xc2\xb2", b"9" * 5000,  # "²" (isdigit but not int()-able), and past int()'s digit limit
]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup_line", "crlf_to_lf", "lf_to_crlf",
                                   "splice"]))
        size = len(data)
        pos = draw(st.integers(min_value=0, max_value=max(size - 1, 0)))
        if op == "flip" and size:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(_INTERESTING) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup_line":
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                index = draw(st.integers(min_value=1, max_value=len(lines) - 1))
                lines.insert(index, lines[index])
                data = bytearray(b"\r\n".join(lines))
        elif op == "crlf_to_lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(min_value=1, max_value=50))))
        elif op == "lf_to_crlf":
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            cut = draw(st.integers(min_value=0, max_value=len(other)))
            data = data[:pos] + other[cut:]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_messages(data):
    exercise(data)


@SETTINGS
@given(mutated(), st.lists(st.integers(min_value=0, max_value=5000), max_size=5))
def test_mutated_messages_through_the_framer(data, cuts):
    feed_in_chunks(data, cuts)


# -- (c) SIP-ish header values ----------------------------------------------------------

_SIPISH = st.sampled_from(list("aZ09 \t;,:=<>\"@[]?&%/\\.-_!~*'()+$#{}|^`")
                          + ["é", "\u2028", "\x00", "\x7f", "٣", "²", "9" * 5000, "sip:", "<sip:", "%4", ";tag=",
                             "SIP/2.0/UDP "])
_VALUES = st.lists(_SIPISH, max_size=40).map("".join)
_SLOTS = [
    "To", "From", "Via", "Contact", "CSeq", "Call-ID", "Max-Forwards", "Content-Length", "l",
    "Expires", "Record-Route", "Route", "Require", "Supported", "m", "v", "Content-Type",
]


def _template(slot: str, value: str, ruri: str) -> bytes:
    headers = {
        "Via": "SIP/2.0/UDP host.example.com;branch=z9hG4bKabc",
        "To": "<sip:bob@example.com>",
        "From": "<sip:alice@example.com>;tag=1",
        "Call-ID": "c@example.com",
        "CSeq": "1 OPTIONS",
        "Max-Forwards": "70",
    }
    headers[slot] = value
    lines = [f"OPTIONS {ruri} SIP/2.0", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="surrogatepass")


@SETTINGS
@given(st.sampled_from(_SLOTS), _VALUES, st.sampled_from(["sip:bob@example.com", "sips:[::1]:5061", "tel:+1"]))
def test_sipish_header_values(slot, value, ruri):
    exercise(_template(slot, value, ruri))


@SETTINGS
@given(_VALUES, _VALUES)
def test_sipish_request_uris_and_addresses(user, params):
    exercise(_template("To", f'"{user}" <sip:{user}@example.com;{params}>;{params}',
                       f"sip:{user}@example.com;{params}"))
    exercise(_template("Contact", f"{user}, <sip:a@b>{params}", f"sip:{params}"))


_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789²٣５ -+.e", min_size=1, max_size=12),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "9" * n),
)


@SETTINGS
@given(_NUMBERS, st.sampled_from(["cseq", "max-forwards", "content-length", "l", "expires", "via-port", "uri-port",
                                  "status"]))
def test_numeric_fields(number, where):
    if where == "status":
        exercise(f"SIP/2.0 {number} OK\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nFrom: <sip:a@b>\r\n"
                 "Call-ID: c\r\nCSeq: 1 X\r\n\r\n".encode())
    elif where == "cseq":
        exercise(_template("CSeq", f"{number} OPTIONS", "sip:bob@example.com"))
    elif where == "via-port":
        exercise(_template("Via", f"SIP/2.0/UDP h:{number};branch=z9hG4bKx", "sip:bob@example.com"))
    elif where == "uri-port":
        exercise(_template("To", f"<sip:bob@example.com:{number}>", f"sip:bob@example.com:{number}"))
    else:
        name = {"max-forwards": "Max-Forwards", "content-length": "Content-Length", "l": "l",
                "expires": "Expires"}[where]
        exercise(_template(name, number, "sip:bob@example.com"))
        feed_in_chunks(_template(name, number, "sip:bob@example.com"), [7])


# -- round trip of well-formed requests ----------------------------------------------------

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
_lower_tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!*_+`'~", min_size=1, max_size=10)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
# RFC 3261 §25.1: the top label starts with a letter, so "0.0.0.300" is neither
# a hostname nor an IPv4 address (the parser rightly rejects it).
_toplabel = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_hostnames = st.tuples(st.lists(_label, max_size=3), _toplabel).map(lambda parts: ".".join([*parts[0], parts[1]]))
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{ipaddress.IPv6Address(a).compressed}]")
_hosts = st.one_of(_hostnames, _ipv4, _ipv6)
_user_units = st.one_of(
    st.sampled_from(list("abcXYZ019-_.!~*'()&=+$,;?/")),
    st.integers(min_value=0, max_value=255).map(lambda b: f"%{b:02X}"),
)
_users = st.lists(_user_units, min_size=1, max_size=12).map("".join)
_params = st.dictionaries(_lower_tokens, st.none() | _tokens, max_size=3)
_ports = st.none() | st.integers(min_value=0, max_value=65535)


@st.composite
def sip_uris(draw) -> SipUri:
    return SipUri(
        host=draw(_hosts),
        user=draw(st.none() | _users),
        port=draw(_ports),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=draw(_params),
    )


_display = st.none() | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=20
)


@st.composite
def addresses(draw, tag: bool) -> NameAddr:
    params = draw(st.dictionaries(st.sampled_from(["x-a", "x-b", "expires"]), st.none() | _tokens, max_size=2))
    if tag:
        params["tag"] = draw(_tokens)
    return NameAddr(uri=draw(sip_uris()), display_name=draw(_display), params=params)


@st.composite
def vias(draw) -> Via:
    params = {"branch": "z9hG4bK" + draw(_tokens)}
    params.update(draw(st.dictionaries(st.sampled_from(["rport", "received", "ttl"]), st.none() | _tokens, max_size=2)))
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "WS", "SCTP"])),
        host=draw(_hosts),
        port=draw(_ports),
        params=params,
    )


_extra_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
).map(lambda v: v.strip(" \t"))


@SETTINGS
@given(
    method=_tokens,
    uri=sip_uris(),
    to=addresses(tag=False),
    frm=addresses(tag=True),
    hops=st.lists(vias(), min_size=1, max_size=4),
    call_id=st.text(alphabet=_TOKEN_CHARS + "()<>:\\/[]?{}\"", min_size=1, max_size=20),
    number=st.integers(min_value=0, max_value=2**32 - 1),
    max_forwards=st.none() | st.integers(min_value=0, max_value=255),
    extra=st.lists(st.tuples(st.sampled_from(["X-One", "X-Two", "Subject", "User-Agent"]), _extra_values), max_size=4),
    body=st.binary(max_size=200),
    compact_via=st.booleans(),
)
def test_generated_requests_round_trip(method, uri, to, frm, hops, call_id, number, max_forwards, extra, body,
                                       compact_via):
    req = Request(method=method, uri=uri)
    if compact_via:
        req.headers.add("v", ", ".join(str(v) for v in hops))
    else:
        for hop in hops:
            req.headers.add("Via", str(hop))
    req.headers.add("To", str(to))
    req.headers.add("From", str(frm))
    req.headers.add("Call-ID", call_id)
    req.headers.add("CSeq", f"{number} {method}")
    if max_forwards is not None:
        req.headers.add("Max-Forwards", str(max_forwards))
    for name, value in extra:
        req.headers.add(name, value)
    req.body = body

    for stream in (False, True):
        parsed = parse_message(req.serialize(), stream=stream)
        assert isinstance(parsed, Request)
        assert parsed.method == method
        assert parsed.uri == uri
        assert parsed.to_addr == to
        assert parsed.from_addr == frm
        assert parsed.vias == hops
        assert parsed.call_id == call_id
        assert parsed.cseq == CSeq(number, method)
        assert parsed.max_forwards == max_forwards
        assert parsed.body == body
        for name, value in extra:
            assert value in parsed.headers.get_all(name)
        assert parsed.serialize() == req.serialize()
